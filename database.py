"""Engine, sessions, migrations and row locking."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from models import Cluster

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY = "hypervisor_read_only"  # execution option: this transaction only reads


def make_engine(url: str, **options: Any) -> Engine:
    """An engine for the URL; SQLite gets foreign keys, WAL and write-first transactions."""
    if not url.startswith("sqlite"):
        # Up to 40 requests run at once (FastAPI's thread pool), plus the scheduler loop:
        # each holds one connection for its transaction, so the pool never makes them queue.
        # Two replicas stay under PostgreSQL's default of 100 connections.
        pool = {"pool_size": 10, "max_overflow": 35, "pool_pre_ping": True}
        return create_engine(url, **{**pool, **options})
    in_memory = make_url(url).database in (None, "", ":memory:")
    pool = {} if in_memory else {"pool_size": 10, "max_overflow": 35}
    engine = create_engine(url, connect_args={"check_same_thread": False}, **{**pool, **options})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below emit BEGIN itself instead of the driver.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    # SQLite allows one writer at a time and makes the others poll with growing sleeps
    # (busy_timeout). Queueing this process's transactions on a lock first hands the file
    # over at once instead; SQLite's own lock still arbitrates between processes.
    turn = threading.Lock()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get(READ_ONLY):
            # A reader sees a consistent snapshot (WAL) without waiting for writers.
            connection.exec_driver_sql("BEGIN")
            return
        if not turn.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            # Going on without the turn would let two of this process's transactions write
            # at once; refuse like SQLite itself does (the request layer retries, then 503).
            raise OperationalError(
                "BEGIN IMMEDIATE",
                None,
                sqlite3.OperationalError(
                    f"database is locked: this process's write turn did not come within "
                    f"{SQLITE_BUSY_TIMEOUT_MS / 1000:g} s"
                ),
            )
        connection.info["holds_turn"] = True
        # SQLite locks the whole file: take the write lock before the first read, so two
        # transactions can never both read the same free capacity (and a late lock upgrade
        # never fails with "database is locked"; writers queue on busy_timeout instead).
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except Exception:
            _release_turn(connection)
            raise

    def _release_turn(connection: Any) -> None:
        if connection.info.pop("holds_turn", False):
            turn.release()

    # These events fire just before SQLAlchemy asks the driver to commit or roll back; do it
    # here so the next transaction's turn starts only once the file is free (the driver's
    # own call then finds no transaction open and does nothing).
    @event.listens_for(engine, "commit")
    def _on_commit(connection: Any) -> None:
        try:
            connection.connection.dbapi_connection.commit()
        finally:
            _release_turn(connection)

    @event.listens_for(engine, "rollback")
    def _on_rollback(connection: Any) -> None:
        try:
            connection.connection.dbapi_connection.rollback()
        finally:
            _release_turn(connection)

    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def read_only(session: Session) -> None:
    """Mark the session's transaction as one that only reads: on SQLite it then reads a
    snapshot instead of queueing for the write lock. Call before its first query."""
    session.connection(execution_options={READ_ONLY: True})


def read_only_session(factory: sessionmaker[Session]) -> Session:
    """A new session of the factory whose transactions only read, like `read_only`, but
    marked without a round trip: the mark rides on its bind, so the connection it takes at
    its first query begins as a reader. Opening it costs no I/O (an event loop may do it)."""
    engine: Engine = factory.kw["bind"]
    return factory(bind=engine.execution_options(**{READ_ONLY: True}))


def read_snapshot(session: Session) -> None:
    """Like `read_only`, and every statement of the transaction reads the same snapshot:
    REPEATABLE READ on PostgreSQL (by default each of its statements sees the commits made
    since the previous one); a SQLite read transaction is one snapshot already. Call before
    its first query."""
    options: dict[str, Any] = {READ_ONLY: True}
    if session.get_bind().dialect.name == "postgresql":
        options["isolation_level"] = "REPEATABLE READ"
    session.connection(execution_options=options)


def lock_cluster(session: Session, cluster_id: int) -> Cluster:
    """Re-read the cluster row under `SELECT ... FOR UPDATE` before changing its allocation."""
    statement = select(Cluster).where(Cluster.id == cluster_id).with_for_update()
    return session.execute(statement.execution_options(populate_existing=True)).scalar_one()


def try_lock_cluster(session: Session, cluster_id: int) -> Cluster | None:
    """Lock the cluster row unless another transaction holds it (`SKIP LOCKED`): periodic
    work then leaves that cluster to whoever is already passing over it."""
    statement = select(Cluster).where(Cluster.id == cluster_id).with_for_update(skip_locked=True)
    return session.execute(statement.execution_options(populate_existing=True)).scalar_one_or_none()


def alembic_config(url: str) -> Config:
    """An Alembic configuration that finds the migrations wherever the process starts."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    """Upgrade the database at the URL to the newest schema."""
    command.upgrade(alembic_config(url), "head")


def database_answers(engine: Engine) -> bool:
    """True when a trivial query succeeds."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001 - any failure means "not ready"
        return False
    return True
