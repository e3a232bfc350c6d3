"""Dependencies and documentation shared by every router."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session, sessionmaker

import schemas
import services
from database import read_only
from models import User
from schemas import MAX_ID, NAME_PATTERN
from utils import Settings, get_settings, user_id_from_token

oauth2_scheme = OAuth2PasswordBearer(
    tokenUrl="/user/login",
    scheme_name="Hypervisor account",
    description="Your username and password: Swagger UI logs in and sends the token for you.",
)


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back on error
    (`services.transaction`, which also runs the passes the commit made due elsewhere).

    GET requests change nothing, so on SQLite they read a snapshot instead of queueing for
    the write lock."""
    factory: sessionmaker[Session] = request.app.state.session_factory
    with services.transaction(factory) as session:
        if request.method in ("GET", "HEAD"):
            read_only(session)
        yield session


def get_read_session(request: Request) -> Iterator[Session]:
    """A transaction that only reads, whatever the method: on SQLite it never queues for
    (or holds) the write lock, e.g. while a login checks a password."""
    factory: sessionmaker[Session] = request.app.state.session_factory
    with services.transaction(factory) as session:
        read_only(session)
        yield session


# `scope="function"` commits before the response is sent: a failed commit is a 5xx, never
# a 2xx for work that did not happen.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[Session, Depends(get_read_session, scope="function")]


SettingsDep = Annotated[Settings, Depends(get_settings)]

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


def get_current_user(
    request: Request, settings: SettingsDep, token: Annotated[str, Depends(oauth2_scheme)]
) -> User:
    """The user a valid bearer token names, read in a short transaction of its own that
    only reads: on SQLite a write request then takes the write lock only for its work."""
    user_id = user_id_from_token(token, settings)
    if user_id is None:
        raise services.Unauthorized("invalid or expired token")
    factory: sessionmaker[Session] = request.app.state.session_factory
    with services.transaction(factory) as session:
        read_only(session)
        return services.user_by_id(session, user_id)


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
