"""Dependencies and documentation shared by every router."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session, sessionmaker

import services
from database import read_only
from models import User
from schemas import MAX_ID, NAME_PATTERN
from utils import Settings, get_settings, user_id_from_token

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/user/login")


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


# `scope="function"` commits before the response is sent: a failed commit is a 5xx, never
# a 2xx for work that did not happen.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_current_user(
    session: SessionDep, settings: SettingsDep, token: Annotated[str, Depends(oauth2_scheme)]
) -> User:
    """The user a valid bearer token names."""
    user_id = user_id_from_token(token, settings)
    if user_id is None:
        raise services.Unauthorized("invalid or expired token")
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


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"example": {"detail": description}}},
    }


UNAUTHORIZED = _error("Missing, invalid or expired bearer token")
FORBIDDEN = _error("Your role in the organization is too low")
NOT_FOUND = _error("Not found, or not visible to you")
CONFLICT = _error("Conflicts with the current state")
BAD_REQUEST = _error("Invalid or expired invite code")
RATE_LIMITED = _error("Too many requests; retry after the Retry-After seconds")

Responses = dict[int | str, dict[str, Any]]
AUTHENTICATED: Responses = {401: UNAUTHORIZED, 429: RATE_LIMITED}
MEMBER: Responses = {**AUTHENTICATED, 404: NOT_FOUND}
ROLE_CHECKED: Responses = {**MEMBER, 403: FORBIDDEN}
