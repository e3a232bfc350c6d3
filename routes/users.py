"""Accounts: register, log in, who am I, join an organization."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.security import OAuth2PasswordRequestForm

import schemas
import services
from routes import (
    AUTHENTICATED,
    BAD_REQUEST,
    INVALID,
    RATE_LIMITED,
    CurrentUser,
    ReadSessionDep,
    SessionDep,
    SettingsDep,
    conflict,
    error,
)
from utils import create_access_token

router = APIRouter(prefix="/user", tags=["users"])


@router.post(
    "/register",
    status_code=201,
    summary="Register an account",
    responses={
        409: conflict("username 'alice' is already taken"),
        422: INVALID,
        429: RATE_LIMITED,
    },
)
def register(body: schemas.UserRegister, session: SessionDep) -> schemas.UserRead:
    """Create an account. Usernames are unique ignoring case."""
    return services.register_user(session, body)


@router.post(
    "/login",
    summary="Log in: get a bearer token",
    responses={
        401: error("Wrong username or password", "incorrect username or password"),
        422: INVALID,
        429: RATE_LIMITED,
    },
    openapi_extra={
        "requestBody": {
            "content": {
                "application/x-www-form-urlencoded": {
                    "example": {"username": "alice", "password": "correct horse battery"}
                }
            }
        }
    },
)
def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: ReadSessionDep,
    settings: SettingsDep,
) -> schemas.Token:
    """Exchange username and password (OAuth2 password form) for a bearer token. In Swagger
    UI, the **Authorize** button does this for you: give it a username and a password."""
    user = services.authenticate(session, form.username, form.password)
    token, expires_in = create_access_token(user.id, settings)
    return schemas.Token(access_token=token, expires_in=expires_in)


@router.get("/me", summary="Show who you are and your organizations", responses=AUTHENTICATED)
def me(user: CurrentUser, session: SessionDep) -> schemas.Me:
    """Who you are and your role in each of your organizations."""
    return services.describe_me(session, user)


@router.post(
    "/join",
    summary="Join an organization with an invite code",
    responses={
        **AUTHENTICATED,
        400: BAD_REQUEST,
        409: conflict("you are already a member of 'acme-ml'"),
        422: INVALID,
    },
)
def join(body: schemas.JoinRequest, user: CurrentUser, session: SessionDep) -> schemas.JoinResult:
    """Join an organization with its invite code; you get the role the code carries."""
    return services.join_organization(session, user, body.invite_code)
