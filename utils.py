"""Settings, password hashing, access tokens and invite codes.

This module imports nothing of the app, so every other module may depend on it.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import sys
import tempfile
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from jose import JWTError, jwt
from passlib.context import CryptContext
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

JWT_ALGORITHM = "HS256"
LOG_LEVELS = Literal["critical", "error", "warning", "info", "debug"]


class Settings(BaseSettings):
    """Every knob of the service, read from `HYPERVISOR_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="HYPERVISOR_", extra="ignore")

    database_url: str = "sqlite:///./hypervisor.db"
    secret_key: str | None = None
    secret_key_file: Path = Path("./.secret_key")
    token_ttl_minutes: int = Field(60, ge=1, le=60 * 24 * 30)
    rate_limit: str = "600/minute"
    rate_limit_storage: str = "memory://"
    scheduler_interval_seconds: float = Field(1.0, gt=0, le=3600)
    starvation_seconds: float = Field(300.0, ge=0)
    preemption_grace_seconds: float = Field(0.0, ge=0)
    metrics_token: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    log_level: LOG_LEVELS = "info"
    # Cost factor of bcrypt; tests lower it, production keeps the default.
    bcrypt_rounds: int = Field(12, ge=4, le=16)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    login_rate_limit: str = "10/minute"  # per username, besides the per-address limit
    # Peers whose X-Forwarded-For is believed; anyone else's is ignored.
    trusted_proxies: Annotated[frozenset[str], NoDecode] = frozenset()
    max_clusters_per_organization: int = Field(100, ge=1)
    max_pending_per_organization: int = Field(10_000, ge=1)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        """`HYPERVISOR_TRUSTED_PROXIES=10.0.0.1,10.0.0.2` (a list is taken as it is)."""
        if isinstance(value, str):
            return frozenset(part.strip() for part in value.split(",") if part.strip())
        return value


class Clock:
    """Where the service reads the time: the wall clock, unless tests install another."""

    def now(self) -> datetime:
        """Timezone-aware current UTC time."""
        return datetime.now(UTC)


class _Process:
    """The two things every layer reads from one place: the settings and the clock."""

    settings: Settings | None = None
    clock: Clock = Clock()


def get_settings() -> Settings:
    """The process's settings: those installed with `use_settings`, else read once from
    the `HYPERVISOR_*` environment. Every layer (app, routes, services, loop) reads them here."""
    if _Process.settings is None:
        _Process.settings = Settings()
    return _Process.settings


def use_settings(settings: Settings | None) -> None:
    """Install the settings the process runs with (None: read the environment again)."""
    _Process.settings = settings


def use_clock(clock: Clock | None) -> None:
    """Install the clock every `utcnow()` reads (None: the wall clock); tests inject theirs."""
    _Process.clock = clock or Clock()


def utcnow() -> datetime:
    """Timezone-aware current UTC time, from the installed clock."""
    return _Process.clock.now()


def configure_logging(level: str) -> None:
    """Structured `key=value` log lines on stderr, one per event."""
    logging.basicConfig(
        stream=sys.stderr,
        level=level.upper(),
        format="ts=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s",
        force=True,
    )


# --- passwords -------------------------------------------------------------------------------


@lru_cache
def _password_context(rounds: int) -> CryptContext:
    # bcrypt_sha256 pre-hashes with SHA-256 so every character of a long password counts
    # (plain bcrypt silently ignores everything past 72 bytes).
    return CryptContext(schemes=["bcrypt_sha256"], bcrypt_sha256__rounds=rounds)


def hash_password(password: str) -> str:
    """A salted bcrypt-sha256 hash of the password."""
    hashed: str = _password_context(get_settings().bcrypt_rounds).hash(password)
    return hashed


def verify_password(password: str, password_hash: str) -> bool:
    """True when the password matches the stored hash."""
    matches: bool = _password_context(get_settings().bcrypt_rounds).verify(password, password_hash)
    return matches


# A hash of a random password, to verify against when the username is unknown, so that a
# login for a missing user takes as long as one with a wrong password.
@lru_cache
def dummy_password_hash() -> str:
    """A valid hash that no real password matches."""
    return hash_password(secrets.token_urlsafe(16))


# --- access tokens ---------------------------------------------------------------------------


MIN_KEY_BYTES = 32


class SigningKeyError(RuntimeError):
    """The configured or stored signing key is unusable; the service refuses to start."""


def signing_key(settings: Settings) -> str:
    """The JWT signing secret: from the settings, else generated once and kept in a file.
    Raises SigningKeyError for a key shorter than 32 bytes, wherever it came from."""
    key = settings.secret_key or _key_from_file(settings.secret_key_file.resolve())
    if len(key.encode()) < MIN_KEY_BYTES:
        source = "HYPERVISOR_SECRET_KEY" if settings.secret_key else str(settings.secret_key_file)
        raise SigningKeyError(
            f"the signing key in {source} is shorter than {MIN_KEY_BYTES} bytes; "
            "set a longer HYPERVISOR_SECRET_KEY, or remove the key file to have one generated"
        )
    return key


@lru_cache
def _key_from_file(path: Path) -> str:
    """The key kept at `path`, generating it first if there is none.

    Written whole or not at all: the key goes to a temporary file, is flushed to disk, then
    linked into place, which fails if another process got there first (its key wins). So
    a crash or a race never leaves an empty or half-written key behind."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".secret_key.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        with suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
    return path.read_text().strip()


def create_access_token(user_id: int, settings: Settings) -> tuple[str, int]:
    """A signed token naming the user, and its lifetime in seconds."""
    ttl_seconds = settings.token_ttl_minutes * 60
    now = utcnow()
    claims = {"sub": str(user_id), "iat": now, "exp": now + timedelta(seconds=ttl_seconds)}
    return jwt.encode(claims, signing_key(settings), algorithm=JWT_ALGORITHM), ttl_seconds


def user_id_from_token(token: str, settings: Settings) -> int | None:
    """The user id a valid, unexpired token names, else None."""
    try:
        claims = jwt.decode(
            token,
            signing_key(settings),
            algorithms=[JWT_ALGORITHM],
            # The expiry is checked below against the process clock, which tests inject.
            options={"require_exp": True, "require_sub": True, "verify_exp": False},
        )
    except JWTError:
        return None
    expires = claims.get("exp")
    if not isinstance(expires, int | float) or expires <= utcnow().timestamp():
        return None
    subject = claims.get("sub")
    # Exactly what `create_access_token` writes: a user id in decimal, nothing around it.
    if not isinstance(subject, str) or not _USER_ID.fullmatch(subject):
        return None
    user_id = int(subject)
    return user_id if user_id < 2**63 else None


_USER_ID = re.compile(r"[1-9][0-9]{0,18}")


# --- invite codes ----------------------------------------------------------------------------


def new_invite_code() -> str:
    """A random, unguessable invite code (128 bits, URL-safe)."""
    return secrets.token_urlsafe(16)
