"""SPEC §2, §4 and §7: tokens, tenant isolation, rate limiting, the signing key, probes."""

from __future__ import annotations

import base64
import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings
from fastapi.testclient import TestClient
from jose import jwt
from sqlalchemy import Engine

from database import make_engine
from helpers import (
    PASSWORD,
    auth,
    create_cluster,
    create_org,
    login,
    new_user,
    register,
    reservation,
    resize_body,
    rotate_invite,
)
from main import create_app
from utils import Settings


def register_with_id(client: TestClient) -> tuple[int, dict[str, str]]:
    """A fresh user's id and Authorization header."""
    username = register(client)
    headers = login(client, username)
    user_id: int = client.get("/user/me", headers=headers).json()["id"]
    return user_id, headers


def token_for(claims: dict[str, Any], key: str, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def assert_unauthorized(response: Any) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert isinstance(response.json()["detail"], str)


# --- tokens ----------------------------------------------------------------------------------


def test_a_token_lives_as_long_as_the_configured_ttl(
    tmp_path: Path, engine: Engine, client: TestClient
) -> None:
    username = register(client)
    settings = make_settings(tmp_path, token_ttl_minutes=5)

    with TestClient(create_app(settings, engine=engine)) as short_lived:
        body = short_lived.post(
            "/user/login", data={"username": username, "password": PASSWORD}
        ).json()

    assert body["expires_in"] == 300
    claims = jwt.get_unverified_claims(body["access_token"])
    assert claims["exp"] - claims["iat"] == 300


def test_an_expired_token_is_a_401(client: TestClient, settings: Settings) -> None:
    user_id, headers = register_with_id(client)
    assert client.get("/user/me", headers=headers).status_code == 200
    now = datetime.now(UTC)
    expired = token_for(
        {"sub": str(user_id), "iat": now - timedelta(hours=2), "exp": now - timedelta(seconds=5)},
        str(settings.secret_key),
    )

    assert_unauthorized(client.get("/user/me", headers=auth(expired)))


def test_a_token_signed_with_the_test_secret_and_a_future_expiry_is_accepted(
    client: TestClient, settings: Settings
) -> None:
    user_id, _ = register_with_id(client)
    exp = datetime.now(UTC) + timedelta(minutes=5)
    token = token_for({"sub": str(user_id), "exp": exp}, str(settings.secret_key))

    assert client.get("/user/me", headers=auth(token)).json()["id"] == user_id


def test_a_token_signed_with_another_key_is_a_401(client: TestClient) -> None:
    user_id, _ = register_with_id(client)
    exp = datetime.now(UTC) + timedelta(minutes=5)
    forged = token_for({"sub": str(user_id), "exp": exp}, "not-the-servers-secret-key-at-all")

    assert_unauthorized(client.get("/user/me", headers=auth(forged)))


def test_an_unsigned_alg_none_token_is_a_401(client: TestClient) -> None:
    user_id, _ = register_with_id(client)
    exp = int((datetime.now(UTC) + timedelta(minutes=5)).timestamp())
    header = b64({"alg": "none", "typ": "JWT"})

    for signature in ("", "AAAA"):
        forged = f"{header}.{b64({'sub': str(user_id), 'exp': exp})}.{signature}"
        assert_unauthorized(client.get("/user/me", headers=auth(forged)))


def test_a_token_whose_payload_was_swapped_to_another_user_is_a_401(
    client: TestClient,
) -> None:
    victim_id, _ = register_with_id(client)
    _, attacker = register_with_id(client)
    header, _, signature = attacker["Authorization"].removeprefix("Bearer ").split(".")
    exp = int((datetime.now(UTC) + timedelta(minutes=5)).timestamp())
    tampered = f"{header}.{b64({'sub': str(victim_id), 'exp': exp})}.{signature}"

    assert_unauthorized(client.get("/user/me", headers=auth(tampered)))


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b.c", "", " ", "Bearer", "e30.e30.e30", "x" * 5000, "ünï.cö.de"],
)
def test_garbage_tokens_are_a_401(client: TestClient, token: str) -> None:
    # httpx refuses non-latin-1 header text; send the UTF-8 bytes the way a raw client would.
    header = f"Bearer {token}".encode()

    assert_unauthorized(client.get("/user/me", headers={"Authorization": header}))


@pytest.mark.parametrize(
    "claims",
    [
        {},
        {"sub": "not-a-number"},
        {"sub": "0"},
        {"sub": "-1"},
        {"sub": str(2**63)},
        {"sub": "1e3"},
        {"sub": None},
        {"sub": ["1"]},
        {"sub": " 1 "},
        {"sub": "01"},
        {"sub": "+1"},
        {"sub": 1},
    ],
)
def test_validly_signed_tokens_with_a_bad_subject_are_a_401(
    client: TestClient, settings: Settings, claims: dict[str, Any]
) -> None:
    register_with_id(client)
    exp = datetime.now(UTC) + timedelta(minutes=5)
    token = token_for(claims | {"exp": exp}, str(settings.secret_key))

    assert_unauthorized(client.get("/user/me", headers=auth(token)))


def test_a_token_of_a_user_that_does_not_exist_is_a_401(
    client: TestClient, settings: Settings
) -> None:
    user_id, _ = register_with_id(client)
    exp = datetime.now(UTC) + timedelta(minutes=5)

    for ghost in (user_id + 1000, 2**63 - 1):
        token = token_for({"sub": str(ghost), "exp": exp}, str(settings.secret_key))
        assert_unauthorized(client.get("/user/me", headers=auth(token)))
        assert_unauthorized(
            client.post("/organization/create", json={"name": "ghost-org"}, headers=auth(token))
        )


@pytest.mark.parametrize("scheme", ["Basic", "Token", "bearer-ish"])
def test_only_the_bearer_scheme_is_accepted(client: TestClient, scheme: str) -> None:
    _, headers = register_with_id(client)
    token = headers["Authorization"].removeprefix("Bearer ")

    assert_unauthorized(client.get("/user/me", headers={"Authorization": f"{scheme} {token}"}))
    assert_unauthorized(client.get("/user/me", params={"access_token": token}))


# --- tenant isolation ------------------------------------------------------------------------


@pytest.fixture
def tenants(client: TestClient) -> dict[str, Any]:
    """Tenant A and tenant B, each with an admin, a cluster and a member of its own."""
    alice = new_user(client)
    org_a = create_org(client, alice, "alpha-corp")["name"]
    create_cluster(client, alice, org_a, "shared-name", gpu=2)
    bob = new_user(client)
    org_b = create_org(client, bob, "Beta-Secret-Org")["name"]
    create_cluster(client, bob, org_b, "shared-name", gpu=8)
    create_cluster(client, bob, org_b, "beta-hidden-cluster", gpu=8)
    client.post(
        "/cluster/allocate", json=reservation(org_b, "beta-hidden-cluster", gpu=3), headers=bob
    )
    b_member = register(client, "beta-member-name")
    code = rotate_invite(client, bob, org_b, role="viewer")["invite_code"]
    client.post("/user/join", json={"invite_code": code}, headers=login(client, b_member))
    return {"alice": alice, "bob": bob, "org_a": org_a, "org_b": org_b, "b_member": b_member}


SECRETS_OF_B = ("beta-hidden-cluster", "beta-member-name", "Beta-Secret-Org")


def attempts_on(org: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every organization-scoped request, aimed at `org`."""
    return [
        ("GET", f"/organization/list-users/{org}", None),
        ("GET", f"/cluster/list/{org}", None),
        ("GET", f"/organization/get-invite-code/{org}", None),
        ("POST", f"/organization/{org}/invite-code/rotate", {"role": "admin"}),
        ("PUT", f"/organization/{org}/members/beta-member-name", {"role": "admin"}),
        ("DELETE", f"/organization/{org}/members/beta-member-name", None),
        (
            "POST",
            "/cluster/create",
            {
                "name": "intruder",
                "organization_name": org,
                "total_cpu": 1,
                "total_ram": 1,
                "total_gpu": 1,
            },
        ),
        ("POST", "/cluster/allocate", reservation(org, "beta-hidden-cluster", gpu=1)),
        ("POST", "/cluster/release", reservation(org, "beta-hidden-cluster", gpu=1)),
        ("PATCH", "/cluster/resize", resize_body(org, "beta-hidden-cluster", 1, 1, 1)),
    ]


def b_state(client: TestClient, tenants: dict[str, Any]) -> dict[str, Any]:
    bob, org_b = tenants["bob"], tenants["org_b"]
    return {
        "clusters": client.get(f"/cluster/list/{org_b}", headers=bob).json(),
        "members": client.get(f"/organization/list-users/{org_b}", headers=bob).json(),
        "invite": client.get(f"/organization/get-invite-code/{org_b}", headers=bob).json(),
    }


@pytest.mark.parametrize("spelling", ["Beta-Secret-Org", "beta-secret-org"])
def test_another_tenants_organization_answers_404_to_everything_and_stays_intact(
    client: TestClient, tenants: dict[str, Any], spelling: str
) -> None:
    before = b_state(client, tenants)

    for method, path, body in attempts_on(spelling):
        response = client.request(method, path, json=body, headers=tenants["alice"])
        assert response.status_code == 404, (method, path, response.text)
        for secret in SECRETS_OF_B:
            if secret not in spelling:
                assert secret not in response.text, (method, path, response.text)

    assert b_state(client, tenants) == before


def test_a_hidden_organization_looks_exactly_like_a_missing_one(
    client: TestClient, tenants: dict[str, Any]
) -> None:
    for (method, path, body), (_, ghost_path, ghost_body) in zip(
        attempts_on(tenants["org_b"]), attempts_on("Gamma-Nothing-Org"), strict=True
    ):
        hidden = client.request(method, path, json=body, headers=tenants["alice"])
        missing = client.request(method, ghost_path, json=ghost_body, headers=tenants["alice"])
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json()["detail"].replace(tenants["org_b"], "X") == missing.json()[
            "detail"
        ].replace("Gamma-Nothing-Org", "X")


def test_a_same_named_cluster_in_your_own_organization_is_the_one_you_get(
    client: TestClient, tenants: dict[str, Any]
) -> None:
    response = client.post(
        "/cluster/allocate",
        json=reservation(tenants["org_a"], "shared-name", gpu=2),
        headers=tenants["alice"],
    )

    assert response.status_code == 200
    assert response.json()["organization_name"] == tenants["org_a"]
    b_clusters = client.get(f"/cluster/list/{tenants['org_b']}", headers=tenants["bob"]).json()
    assert {c["name"]: c["reserved_gpu"] for c in b_clusters["clusters"]} == {
        "shared-name": 0,
        "beta-hidden-cluster": 3,
    }


def test_your_own_organization_does_not_open_another_tenants_cluster(
    client: TestClient, tenants: dict[str, Any]
) -> None:
    response = client.post(
        "/cluster/allocate",
        json=reservation(tenants["org_a"], "beta-hidden-cluster", gpu=1),
        headers=tenants["alice"],
    )

    assert response.status_code == 404


def test_me_never_lists_another_tenants_organization(
    client: TestClient, tenants: dict[str, Any]
) -> None:
    me = client.get("/user/me", headers=tenants["alice"])

    assert me.json()["organizations"] == [{"name": "alpha-corp", "role": "admin"}]
    for secret in SECRETS_OF_B:
        assert secret not in me.text


# --- rate limiting ---------------------------------------------------------------------------


@pytest.fixture
def limited(tmp_path: Path, engine: Engine) -> Any:
    """An app on the shared database allowing 3 requests a minute per caller."""
    return create_app(make_settings(tmp_path, rate_limit="3/minute"), engine=engine)


def test_the_fourth_request_in_a_minute_is_a_429_with_retry_after(
    client: TestClient, limited: Any
) -> None:
    headers = new_user(client)  # set up through the unlimited app on the same database

    with TestClient(limited) as c:
        statuses = [c.get("/user/me", headers=headers).status_code for _ in range(3)]
        blocked = c.get("/user/me", headers=headers)

    assert statuses == [200, 200, 200]
    assert blocked.status_code == 429
    assert 1 <= int(blocked.headers["Retry-After"]) <= 60
    assert isinstance(blocked.json()["detail"], str)


def test_the_limit_is_kept_per_user(client: TestClient, limited: Any) -> None:
    noisy, quiet = new_user(client), new_user(client)

    with TestClient(limited) as c:
        for _ in range(3):
            c.get("/user/me", headers=noisy)
        assert c.get("/user/me", headers=noisy).status_code == 429

        assert [c.get("/user/me", headers=quiet).status_code for _ in range(3)] == [200] * 3
        assert c.get("/user/me", headers=quiet).status_code == 429


def test_before_login_the_limit_is_kept_per_client_address(
    client: TestClient, limited: Any
) -> None:
    username = register(client)
    form = {"username": username, "password": PASSWORD}
    wrong = {"username": username, "password": "not the password"}

    with (
        TestClient(limited, client=("203.0.113.7", 40000)) as first,
        TestClient(limited, client=("198.51.100.9", 40000)) as second,
    ):
        # Failed logins count against the address (successful ones do not).
        statuses = [first.post("/user/login", data=wrong).status_code for _ in range(3)]
        blocked = first.post("/user/login", data=form)
        other_address = second.post("/user/login", data=form)
        # Once logged in, the user has a quota of its own, apart from its address.
        token = auth(other_address.json()["access_token"])
        as_user = first.get("/user/me", headers=token)

    assert statuses == [401, 401, 401]
    assert blocked.status_code == 429
    assert "Retry-After" in blocked.headers
    assert other_address.status_code == 200
    assert as_user.status_code == 200


def test_a_bad_token_counts_against_the_client_address(client: TestClient, limited: Any) -> None:
    with TestClient(limited, client=("192.0.2.1", 1000)) as c:
        statuses = [c.get("/user/me", headers=auth(f"forged-{i}")).status_code for i in range(4)]

    assert statuses == [401, 401, 401, 429]


def test_the_liveness_probe_is_never_rate_limited(client: TestClient, limited: Any) -> None:
    with TestClient(limited) as c:
        statuses = {c.get("/healthz").status_code for _ in range(6)}

    assert statuses == {200}


def test_a_rate_limit_of_0_disables_limiting(tmp_path: Path, engine: Engine) -> None:
    app = create_app(make_settings(tmp_path, rate_limit="0"), engine=engine)

    with TestClient(app) as c:
        headers = new_user(c)
        statuses = [c.get("/user/me", headers=headers).status_code for _ in range(30)]

    assert statuses == [200] * 30


# --- the signing key survives a restart ------------------------------------------------------


def test_a_token_survives_a_restart_with_the_generated_key_file(
    tmp_path: Path, engine: Engine
) -> None:
    key_file = tmp_path / "key"
    settings = make_settings(tmp_path, secret_key=None, secret_key_file=key_file)
    with TestClient(create_app(settings, engine=engine)) as first_process:
        headers = new_user(first_process)
        assert first_process.get("/user/me", headers=headers).status_code == 200
    # A restarted process knows only what is on disk. This process remembers the key it
    # read from `key_file`, so the restart reads the very same file under a new name.
    restarted_file = tmp_path / "restarted-key"
    os.link(key_file, restarted_file)
    restarted = make_settings(tmp_path, secret_key=None, secret_key_file=restarted_file)

    with TestClient(create_app(restarted, engine=engine)) as second_process:
        after_restart = second_process.get("/user/me", headers=headers)

    assert after_restart.status_code == 200
    assert key_file.exists()
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert len(key_file.read_text().strip()) >= 32


def test_the_generated_key_is_what_signs_tokens(tmp_path: Path, engine: Engine) -> None:
    settings = make_settings(tmp_path, secret_key=None, secret_key_file=tmp_path / "key")
    other = make_settings(tmp_path, secret_key=None, secret_key_file=tmp_path / "other-key")
    with TestClient(create_app(settings, engine=engine)) as c:
        headers = new_user(c)
    with TestClient(create_app(other, engine=engine)) as elsewhere:
        foreign = elsewhere.get("/user/me", headers=headers)

    key = (tmp_path / "key").read_text().strip()
    jwt.decode(headers["Authorization"].removeprefix("Bearer "), key, algorithms=["HS256"])
    assert_unauthorized(foreign)


# --- probes ----------------------------------------------------------------------------------


def test_healthz_answers_200_without_credentials(client: TestClient) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200


def test_readyz_answers_200_when_the_database_answers(client: TestClient) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200


def test_readyz_answers_503_when_the_database_does_not(tmp_path: Path, settings: Settings) -> None:
    unreachable = make_engine(f"sqlite:///{tmp_path}/missing-dir/nowhere/db.sqlite")
    app = create_app(settings, engine=unreachable)

    with TestClient(app) as c:
        ready = c.get("/readyz")
        alive = c.get("/healthz")

    unreachable.dispose()
    assert ready.status_code == 503
    assert alive.status_code == 200
    assert "Traceback" not in ready.text
