"""Hardening (SPEC §2, §3, §7): the signing key, tokens, password hashing outside the write
lock, the rejoin rule, per-organization limits, an idle loop for idle clusters, and long
dependency chains settled in bounded transactions."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings
from fastapi.testclient import TestClient
from jose import jwt
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session
from workloads import make_team

import database
import services
import utils
from helpers import auth, create_cluster, create_org, login, member_with_role, new_user, register
from main import create_app
from services.scheduling import SETTLE_BATCH
from utils import Settings, SigningKeyError, signing_key

APP_DIR = Path(__file__).resolve().parent.parent

# --- the signing key ---------------------------------------------------------------------------

_READ_KEY = """
import hashlib, pathlib, sys, time
go = pathlib.Path(sys.argv[2])
while not go.exists():  # a barrier: every process reads the key file at the same moment
    time.sleep(0.001)
import utils
key = utils.signing_key(utils.Settings(secret_key=None, secret_key_file=sys.argv[1]))
sys.stdout.write(hashlib.sha256(key.encode()).hexdigest())
"""


def test_processes_starting_together_all_get_the_same_full_length_key(tmp_path: Path) -> None:
    for trial in range(6):
        key_file, go = tmp_path / f"key-{trial}", tmp_path / f"go-{trial}"
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", _READ_KEY, str(key_file), str(go)],
                cwd=APP_DIR,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        go.touch()
        outcomes = [process.communicate(timeout=60) for process in processes]

        assert [err for _, err in outcomes if err] == []
        stored = key_file.read_text().strip()
        assert len(stored) >= utils.MIN_KEY_BYTES
        assert {out for out, _ in outcomes} == {hashlib.sha256(stored.encode()).hexdigest()}
        assert list(tmp_path.glob(".secret_key.*")) == []  # no temporary file left behind


@pytest.mark.parametrize("stored", ["", "   \n", "short-key"])
def test_a_stored_key_shorter_than_32_bytes_refuses_to_start(
    tmp_path: Path, engine: Engine, stored: str
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(stored)
    settings = make_settings(tmp_path, secret_key=None, secret_key_file=key_file)
    utils._key_from_file.cache_clear()
    try:
        with pytest.raises(SigningKeyError, match="shorter than 32 bytes"):
            with TestClient(create_app(settings, engine=engine)):
                pass
    finally:
        utils._key_from_file.cache_clear()


def test_a_configured_key_shorter_than_32_bytes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="HYPERVISOR_SECRET_KEY"):
        signing_key(make_settings(tmp_path, secret_key="x" * 31))
    assert signing_key(make_settings(tmp_path, secret_key="x" * 32)) == "x" * 32


def test_a_token_without_an_expiry_is_a_401(client: TestClient, settings: Settings) -> None:
    username = register(client)
    user_id = client.get("/user/me", headers=login(client, username)).json()["id"]
    forever = jwt.encode({"sub": str(user_id)}, str(settings.secret_key), algorithm="HS256")
    expiring = jwt.encode(
        {"sub": str(user_id), "exp": datetime.now(UTC) + timedelta(minutes=5)},
        str(settings.secret_key),
        algorithm="HS256",
    )

    assert client.get("/user/me", headers=auth(forever)).status_code == 401
    assert client.get("/user/me", headers=auth(expiring)).status_code == 200


# --- bcrypt outside the write lock -------------------------------------------------------------


def _while_hashing_another_transaction_writes(
    app: Any, monkeypatch: pytest.MonkeyPatch, module: Any, name: str
) -> list[str]:
    """Patch `module.name` (a bcrypt call) so that, while it runs, another thread writes;
    returns what that writer saw (on SQLite, a held write lock makes it time out)."""
    monkeypatch.setattr(database, "SQLITE_BUSY_TIMEOUT_MS", 300)
    seen: list[str] = []
    real = getattr(module, name)

    def write_elsewhere() -> None:
        try:
            with app.state.session_factory.begin() as session:
                session.execute(text("UPDATE users SET username = username WHERE id = -1"))
            seen.append("written")
        except Exception as error:  # noqa: BLE001 - what the writer saw is the result
            seen.append(type(error).__name__)

    def hashing(*args: Any) -> Any:
        writer = threading.Thread(target=write_elsewhere)
        writer.start()
        writer.join(timeout=30)
        return real(*args)

    monkeypatch.setattr(module, name, hashing)
    return seen


def test_a_failed_login_checks_the_password_without_holding_the_write_lock(
    client: TestClient, app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    username = register(client)
    seen = _while_hashing_another_transaction_writes(
        app, monkeypatch, services.users, "verify_password"
    )

    response = client.post("/user/login", data={"username": username, "password": "wrong-one"})

    assert response.status_code == 401
    assert seen == ["written"]


def test_a_registration_hashes_before_it_takes_the_write_lock(
    client: TestClient, app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _while_hashing_another_transaction_writes(
        app, monkeypatch, services.users, "hash_password"
    )

    response = client.post(
        "/user/register", json={"username": "newcomer", "password": "long enough pw"}
    )

    assert response.status_code == 201
    assert seen == ["written"]


# --- the rejoin rule (SPEC §3) -------------------------------------------------------------------


def _join(client: TestClient, headers: dict[str, str], code: str) -> Any:
    return client.post("/user/join", json={"invite_code": code}, headers=headers)


def test_leaving_and_rejoining_with_the_old_code_does_not_undo_a_demotion(
    client: TestClient, clock: Any
) -> None:
    admin = new_user(client)
    org = create_org(client, admin)["name"]
    code = client.get(f"/organization/get-invite-code/{org}", headers=admin).json()
    member = new_user(client)
    assert _join(client, member, code["invite_code"]).status_code == 200
    name = client.get("/user/me", headers=member).json()["username"]
    demoted = client.put(
        f"/organization/{org}/members/{name}", json={"role": "viewer"}, headers=admin
    )
    assert demoted.status_code == 200
    clock.advance(1)
    assert client.delete(f"/organization/{org}/members/{name}", headers=member).status_code == 204

    clock.advance(1)
    again = _join(client, member, code["invite_code"])

    assert again.status_code == 400
    assert "issued before your membership ended" in again.json()["detail"]
    assert client.get("/user/me", headers=member).json()["organizations"] == []


def test_a_removed_member_rejoins_only_with_a_code_issued_after_the_removal(
    client: TestClient, clock: Any
) -> None:
    admin = new_user(client)
    org = create_org(client, admin)["name"]
    member = member_with_role(client, admin, org, "developer")
    old_code = client.get(f"/organization/get-invite-code/{org}", headers=admin).json()
    name = client.get("/user/me", headers=member).json()["username"]
    clock.advance(1)
    assert client.delete(f"/organization/{org}/members/{name}", headers=admin).status_code == 204
    clock.advance(1)
    refused = _join(client, member, old_code["invite_code"])
    new_code = client.post(
        f"/organization/{org}/invite-code/rotate", json={"role": "viewer"}, headers=admin
    ).json()

    accepted = _join(client, member, new_code["invite_code"])

    assert refused.status_code == 400
    assert accepted.status_code == 200
    assert accepted.json() == {"organization": org, "role": "viewer"}


# --- per-organization limits (SPEC §7) ------------------------------------------------------------


def test_a_cluster_beyond_the_organizations_limit_is_a_409_naming_it(
    tmp_path: Path, engine: Engine
) -> None:
    app = create_app(make_settings(tmp_path, max_clusters_per_organization=2), engine=engine)
    with TestClient(app) as client:
        admin = new_user(client)
        org = create_org(client, admin)["name"]
        other_org = create_org(client, admin)["name"]
        create_cluster(client, admin, org)
        create_cluster(client, admin, org)
        refused = client.post(
            "/cluster/create",
            json={
                "name": "third",
                "organization_name": org,
                "total_cpu": 1,
                "total_ram": 1,
                "total_gpu": 0,
            },
            headers=admin,
        )
        elsewhere = create_cluster(client, admin, other_org)

    assert refused.status_code == 409
    assert "HYPERVISOR_MAX_CLUSTERS_PER_ORGANIZATION=2" in refused.json()["detail"]
    assert elsewhere["organization_name"] == other_org


def test_a_create_beyond_the_organizations_pending_limit_is_a_409_naming_it(
    tmp_path: Path, engine: Engine
) -> None:
    app = create_app(make_settings(tmp_path, max_pending_per_organization=2), engine=engine)
    with TestClient(app) as client:
        team = make_team(client, gpu=1)
        team.deploy(gpu=1)
        waiting = [team.deploy(gpu=1), team.deploy(gpu=1)]
        refused = client.post("/deployment/create", json=team.body(gpu=1), headers=team.headers)
        team.cancel(waiting[0])
        accepted = client.post("/deployment/create", json=team.body(gpu=1), headers=team.headers)

    assert refused.status_code == 409
    assert "HYPERVISOR_MAX_PENDING_PER_ORGANIZATION=2" in refused.json()["detail"]
    assert accepted.status_code == 201


# --- the loop and long chains -----------------------------------------------------------


def test_the_loop_passes_over_clusters_with_timed_or_waiting_work_only(
    client: TestClient, app: Any, clock: Any
) -> None:
    idle = make_team(client, gpu=1)
    for _ in range(5):
        create_cluster(client, idle.headers, idle.org)
    untimed = make_team(client, gpu=1)
    untimed.deploy(gpu=1)
    timed = make_team(client, gpu=1)
    finishing = timed.deploy(gpu=1, duration_seconds=10)
    waiting = make_team(client, gpu=1)
    waiting.deploy(gpu=1)
    queued = waiting.deploy(gpu=1)

    clock.advance(11)
    passes = services.run_periodic_passes(app.state.session_factory)

    assert passes == 2  # the timed cluster and the one with a queue; 8 others idle
    assert timed.status(finishing) == "completed"
    assert waiting.status(queued) == "pending"


def test_cancelling_the_root_of_a_long_chain_fails_it_all_in_bounded_transactions(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    team = make_team(client, gpu=1)
    root = team.deploy(gpu=1)
    chain = [root]
    for _ in range(3 * SETTLE_BATCH + 7):
        chain.append(team.deploy(cpu=1, depends_on=[chain[-1]["id"]]))
    failed_by_session: dict[int, int] = {}
    real_record = services.scheduling.record

    def counting_record(session: Session, ids: Any, kind: str, *rest: Any) -> None:
        ids = list(ids)
        if kind == "failed":
            failed_by_session[id(session)] = failed_by_session.get(id(session), 0) + len(ids)
        real_record(session, ids, kind, *rest)

    monkeypatch.setattr(services.scheduling, "record", counting_record)

    team.cancel(root)

    statuses = [team.status(deployment) for deployment in chain[1:]]
    assert statuses == ["failed"] * (3 * SETTLE_BATCH + 7)
    assert sum(failed_by_session.values()) == 3 * SETTLE_BATCH + 7
    assert max(failed_by_session.values()) <= SETTLE_BATCH


def test_a_token_expires_by_the_process_clock(client: TestClient, clock: Any) -> None:
    headers = login(client, register(client))
    assert client.get("/user/me", headers=headers).status_code == 200

    clock.advance(60 * 60 + 1)  # past the default one-hour lifetime

    assert client.get("/user/me", headers=headers).status_code == 401
