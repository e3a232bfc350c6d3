"""Dependencies and documentation shared by every router."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import Depends, Path, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

import schemas
import services
from models import User
from schemas import MAX_ID, NAME_PATTERN
from utils import Settings, get_settings, user_id_from_token

oauth2_scheme = OAuth2PasswordBearer(
    tokenUrl="/user/login",
    scheme_name="Hypervisor account",
    description="Your username and password: Swagger UI logs in and sends the token for you.",
)


# The dependencies below are async and do no I/O on the event loop: a request then makes
# two hops to the thread pool (its route, and its commit) instead of one per dependency.


@asynccontextmanager
async def _unit_of_work(request: Request, *, read_only: bool) -> AsyncIterator[Session]:
    """The request's transaction (`services.transaction`): opened here, which costs no I/O
    (the route's first query takes the connection, in the route's thread); committed, or
    rolled back on an error, in one worker thread, with the passes the commit made due."""
    factory: sessionmaker[Session] = request.app.state.session_factory
    unit = services.transaction(factory, read_only=read_only)
    session = unit.__enter__()
    # The end runs whatever happens to the request (shielded from its cancellation) and
    # outside the pool's capacity: with every pool thread waiting for the SQLite write turn
    # this transaction holds, a commit queued behind them would never come (FastAPI's own
    # `contextmanager_in_threadpool` does the same).
    outside_the_pool = anyio.CapacityLimiter(1)
    try:
        yield session
    except BaseException as error:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(
                unit.__exit__, type(error), error, error.__traceback__, limiter=outside_the_pool
            )
        raise
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(unit.__exit__, None, None, None, limiter=outside_the_pool)


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One transaction per request: committed when the route returns, rolled back on error.

    GET requests change nothing, so on SQLite they read a snapshot instead of queueing for
    the write lock."""
    async with _unit_of_work(request, read_only=request.method in ("GET", "HEAD")) as session:
        yield session


async def get_read_session(request: Request) -> AsyncIterator[Session]:
    """A transaction that only reads, whatever the method: on SQLite it never queues for
    (or holds) the write lock, e.g. while a login checks a password."""
    async with _unit_of_work(request, read_only=True) as session:
        yield session


# `scope="function"` commits before the response is sent: a failed commit is a 5xx, never
# a 2xx for work that did not happen.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[Session, Depends(get_read_session, scope="function")]


async def settings_dependency() -> Settings:
    """The process's settings (`utils.get_settings`), without a hop to the thread pool."""
    return get_settings()


SettingsDep = Annotated[Settings, Depends(settings_dependency)]

# The one mapping of domain errors to status codes: the API's error handler (`main.py`)
# and the dashboard's pages (`ui/`) answer a refusal with the same code.
STATUS_OF_ERROR: dict[type[services.DomainError], int] = {
    services.BadRequest: 400,
    services.Unauthorized: 401,
    services.Forbidden: 403,
    services.NotFound: 404,
    services.Conflict: 409,
    services.Invalid: 422,
}


def status_of(error: services.DomainError) -> int:
    """The status code of a domain error: that of the nearest class in its ancestry, so a
    subclass of `Conflict` is still a 409."""
    for kind in type(error).__mro__:
        if kind in STATUS_OF_ERROR:
            return STATUS_OF_ERROR[kind]
    return 400


def _user_id_of(token: str) -> int:
    user_id = user_id_from_token(token, get_settings())
    if user_id is None:
        raise services.Unauthorized("invalid or expired token")
    return user_id


def user_of_token(request: Request, token: str) -> User:
    """The user a valid bearer token names, else Unauthorized. Read once per process
    (`services.KnownUsers`), in a short transaction of its own that only reads: on SQLite
    a write request takes the write lock only for its work. Blocking: for sync callers."""
    user_id = _user_id_of(token)
    known: services.KnownUsers = request.app.state.known_users
    user = known.get(user_id)
    if user is None:
        with services.transaction(request.app.state.session_factory, read_only=True) as session:
            user = services.user_by_id(session, user_id)
        known.remember(user)
    return user


async def get_current_user(request: Request, token: Annotated[str, Depends(oauth2_scheme)]) -> User:
    """`user_of_token` as a dependency: the signature is checked on the event loop (no
    I/O), and only a user this process has not read yet costs a hop to the thread pool."""
    known: services.KnownUsers = request.app.state.known_users
    user = known.get(_user_id_of(token))
    if user is not None:
        return user
    return await run_in_threadpool(user_of_token, request, token)


CurrentUser = Annotated[User, Depends(get_current_user)]

OrgName = Annotated[
    str, Path(min_length=3, max_length=63, pattern=NAME_PATTERN, description="Organization name")
]
ClusterNamePath = Annotated[
    str, Path(min_length=3, max_length=63, pattern=NAME_PATTERN, description="Cluster name")
]
UsernamePath = Annotated[str, Path(min_length=3, max_length=32, pattern=NAME_PATTERN)]
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]


def error(description: str, example: str) -> dict[str, Any]:
    """A documented refusal: `{"detail": <sentence>}`, with a message the service really sends."""
    return {
        "description": description,
        "model": schemas.ErrorMessage,
        "content": {"application/json": {"example": {"detail": example}}},
    }


def conflict(example: str) -> dict[str, Any]:
    """A 409 with the message this endpoint sends."""
    return error("Conflicts with the current state", example)


UNAUTHORIZED = error("Missing, invalid or expired bearer token", "invalid or expired token")
FORBIDDEN = error(
    "Your role in the organization is too low",
    "this needs the admin role in 'acme-ml'; you are developer",
)
NOT_FOUND = error("Not found, or not visible to you", "organization 'acme-ml' not found")
CONFLICT = conflict("deployment 3 is already cancelled")  # for a route without its own message
BAD_REQUEST = error("Invalid or expired invite code", "invalid or expired invite code")
RATE_LIMITED = error(
    "Too many requests; retry after the Retry-After seconds",
    "rate limit of 600/minute exceeded; retry later",
)
INVALID: dict[str, Any] = {
    "description": "The request does not validate: one entry per problem",
    "model": schemas.ValidationErrors,
}


def invalid_or_refused(refusal: str) -> dict[str, Any]:
    """A 422 of either shape: the validation list, or a sentence when the request is valid
    but cannot be served (`refusal` is such a sentence this endpoint sends)."""
    validation = schemas.ValidationErrors.model_json_schema()["examples"][0]
    return {
        "description": "The request does not validate (a list of problems), or cannot be served"
        " as it is (a sentence)",
        "model": schemas.ValidationErrors | schemas.ErrorMessage,
        "content": {
            "application/json": {
                "examples": {
                    "refused": {
                        "summary": "Valid, but cannot be served",
                        "value": {"detail": refusal},
                    },
                    "validation": {"summary": "Fails validation", "value": validation},
                }
            }
        },
    }


Responses = dict[int | str, dict[str, Any]]
AUTHENTICATED: Responses = {401: UNAUTHORIZED, 429: RATE_LIMITED}
MEMBER: Responses = {**AUTHENTICATED, 404: NOT_FOUND}
ROLE_CHECKED: Responses = {**MEMBER, 403: FORBIDDEN}
