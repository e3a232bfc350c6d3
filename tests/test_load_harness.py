"""A small run of the load-and-fault harness (bench/load.py) against real replicas.

Two `python main.py` processes share a fresh PostgreSQL database; ~300 requests from
concurrent clients, one replica SIGKILLed and restarted mid-run; then the harness checks
SPEC §5's invariants in the database. Runs only on PostgreSQL
(`HYPERVISOR_TEST_DATABASE_URL=postgresql+psycopg://...`).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

APP_DIR = Path(__file__).resolve().parent.parent
HARNESS = APP_DIR / "bench" / "load.py"
TEST_DATABASE_URL = os.environ.get("HYPERVISOR_TEST_DATABASE_URL", "")

pytestmark = pytest.mark.skipif(
    not TEST_DATABASE_URL.startswith("postgresql"),
    reason="the load harness test runs replicas on PostgreSQL only: "
    "set HYPERVISOR_TEST_DATABASE_URL=postgresql+psycopg://...",
)


def _admin_connection(database: str = "postgres") -> object:
    import psycopg

    url = make_url(TEST_DATABASE_URL)
    return psycopg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname=database,
        autocommit=True,
        connect_timeout=10,
    )


@pytest.fixture
def fresh_database_url() -> Iterator[str]:
    """A new, empty database on the test server, dropped afterwards."""
    import psycopg

    name = f"hv_load_test_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        connection = _admin_connection()
    except psycopg.OperationalError as error:
        if os.environ.get("HYPERVISOR_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail(f"PostgreSQL does not answer: {error}")
        pytest.skip(f"PostgreSQL does not answer: {error}")
    with connection as conn:  # type: ignore[attr-defined]
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with _admin_connection() as conn:  # type: ignore[attr-defined]
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_two_replicas_with_a_kill_keep_every_invariant(
    fresh_database_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "load.json"
    command = [
        sys.executable,
        str(HARNESS),
        "--database-url",
        fresh_database_url,
        "--replicas",
        "2",
        "--clients",
        "12",
        "--requests",
        "300",
        "--seconds",
        "45",
        "--kill-after",
        "100",
        "--down-seconds",
        "0.5",
        "--out",
        str(out),
    ]
    env = {**os.environ, "HYPERVISOR_BCRYPT_ROUNDS": "4"}
    result = subprocess.run(
        command, cwd=APP_DIR, env=env, capture_output=True, text=True, timeout=150
    )
    assert out.exists(), f"no report; harness said:\n{result.stdout}\n{result.stderr[-3000:]}"
    report = json.loads(out.read_text())

    assert report["server_errors_5xx"] == 0, report["server_error_samples"]
    assert report["violations"] == [], report["violations"]
    kill = report["kill"]
    assert kill is not None, "the replica was never killed"
    assert kill["killed_after_responses"] >= 100  # --kill-after: mid-run, not at the start
    assert "restart_error" not in kill and kill["restarted_pid"] != kill["killed_pid"]
    assert report["per_replica"][str(kill["replica"])]["starts"] == 2
    assert report["responses"] >= 250
    assert result.returncode == 0, result.stdout
