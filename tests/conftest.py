"""Fixtures: a fresh, migrated database per test and a client on an app bound to it.

`HYPERVISOR_TEST_DATABASE_URL` picks the database: unset means a SQLite file per test;
a `postgresql+psycopg://` URL runs the same suite on PostgreSQL (every table emptied
between tests).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

# Cheap hashing for the whole test process; set before the app reads its settings.
os.environ["HYPERVISOR_BCRYPT_ROUNDS"] = "4"
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from database import make_engine, migrate
from main import create_app
from models import Base
from utils import Clock, Settings, use_clock, use_settings

TEST_DATABASE_URL = os.environ.get("HYPERVISOR_TEST_DATABASE_URL", "")
ON_POSTGRES = TEST_DATABASE_URL.startswith("postgresql")


def pytest_report_header() -> str:
    where = f"PostgreSQL {TEST_DATABASE_URL}" if ON_POSTGRES else "SQLite (a file per test)"
    return f"database: {where}"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once; each test copies it instead of migrating again."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrate(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_engine() -> Iterator[Engine]:
    engine = make_engine(TEST_DATABASE_URL)
    try:
        with engine.connect():
            pass
    except OperationalError as error:
        pytest.fail(f"HYPERVISOR_TEST_DATABASE_URL is set but PostgreSQL does not answer: {error}")
    migrate(TEST_DATABASE_URL)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty, fully migrated database for this test."""
    if ON_POSTGRES:
        engine: Engine = request.getfixturevalue("postgres_engine")
        tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
        with engine.begin() as connection:
            connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        yield engine
        return
    path = tmp_path / "hypervisor.db"
    shutil.copy(request.getfixturevalue("sqlite_template"), path)
    engine = make_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings for tests: fast bcrypt, a fixed key, no rate limit unless asked."""
    values: dict[str, object] = {
        "database_url": TEST_DATABASE_URL or f"sqlite:///{tmp_path}/hypervisor.db",
        "secret_key": "test-secret-key-that-is-long-enough-for-hs256",
        "rate_limit": "0",
        "scheduler_interval_seconds": 3600,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _fresh_process_state() -> Iterator[None]:
    """Each test starts from the environment's settings and the wall clock again."""
    yield
    use_settings(None)
    use_clock(None)


class ManualClock(Clock):
    """A clock that moves only when the test says so: `clock.advance(seconds)`."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime.now(UTC).replace(microsecond=0)

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> ManualClock:
    """The time every layer reads (`utils.utcnow`), moved by the test itself."""
    manual = ManualClock()
    use_clock(manual)
    return manual


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    chosen = make_settings(tmp_path)
    use_settings(chosen)
    return chosen


@pytest.fixture
def app(settings: Settings, engine: Engine) -> FastAPI:
    return create_app(settings, engine=engine)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client
