"""Accounts: register, authenticate, who am I, and joining an organization by invite code."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

import schemas
from models import Membership, MembershipEnd, Organization, User
from services.access import membership_of
from services.errors import BadRequest, Conflict, Unauthorized, flush_or_conflict
from utils import dummy_password_hash, hash_password, utcnow, verify_password


def register_user(session: Session, body: schemas.UserRegister) -> schemas.UserRead:
    """Create an account; usernames are unique ignoring case."""
    # Hash before the first query: the transaction (on SQLite, the write lock) starts with
    # that query, and bcrypt's quarter second must not be spent holding it.
    password_hash = hash_password(body.password)
    message = f"username '{body.username}' is already taken"
    taken = session.scalar(
        select(User.id).where(func.lower(User.username) == body.username.lower())
    )
    if taken is not None:
        raise Conflict(message)
    user = User(username=body.username, password_hash=password_hash)
    session.add(user)
    flush_or_conflict(session, message)
    return schemas.UserRead.model_validate(user)


def authenticate(session: Session, username: str, password: str) -> User:
    """The user with these credentials, else Unauthorized (without saying which part is wrong).

    The caller gives it a session that only reads: bcrypt runs in no write transaction."""
    if len(password) > schemas.MAX_PASSWORD_LENGTH or "\x00" in username:
        # No account can have these; hashing megabytes of hostile input is a cheap DoS, and
        # PostgreSQL refuses NUL in a query.
        raise Unauthorized("incorrect username or password")
    user = session.scalar(select(User).where(func.lower(User.username) == username.lower()))
    if user is None:
        verify_password(password, dummy_password_hash())  # same cost as a wrong password
        raise Unauthorized("incorrect username or password")
    if not verify_password(password, user.password_hash):
        raise Unauthorized("incorrect username or password")
    return user


def user_by_id(session: Session, user_id: int) -> User:
    """The user a token names, else Unauthorized."""
    user = session.get(User, user_id)
    if user is None:
        raise Unauthorized("the token's user no longer exists")
    return user


class KnownUsers:
    """The users this process has read for tokens, by id, so a request names its caller
    without a query. Nothing renames or deletes a user, so a remembered one never goes
    stale, in this process or because of another replica; only the id and the username of
    it are ever read. Bounded: past `limit` entries it starts again from empty."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._users: dict[int, User] = {}

    def get(self, user_id: int) -> User | None:
        return self._users.get(user_id)

    def remember(self, user: User) -> None:
        if len(self._users) >= self.limit:
            self._users = {}  # a new dict: a reader in another thread keeps the old one
        self._users[user.id] = user


def describe_me(session: Session, user: User) -> schemas.Me:
    """The caller with every organization they belong to and their role in it."""
    rows = session.execute(
        select(Organization.name, Membership.role)
        .join(Membership, Membership.organization_id == Organization.id)
        .where(Membership.user_id == user.id)
        .order_by(Organization.name)
    ).all()
    organizations = [schemas.OrganizationRole(name=name, role=role) for name, role in rows]
    return schemas.Me(id=user.id, username=user.username, organizations=organizations)


def join_organization(session: Session, user: User, code: str) -> schemas.JoinResult:
    """Join the organization whose active invite code this is, with the code's role."""
    organization = session.scalar(select(Organization).where(Organization.invite_code == code))
    if organization is None or organization.invite_expires_at <= utcnow():
        raise BadRequest("invalid or expired invite code")
    message = f"you are already a member of '{organization.name}'"
    if membership_of(session, user.id, organization.id) is not None:
        raise Conflict(message)
    ended = session.get(MembershipEnd, (user.id, organization.id))
    if ended is not None and organization.invite_issued_at <= ended.ended_at:
        # Rejoining with a code from before one left would undo a removal or a demotion.
        raise BadRequest(
            "this invite code was issued before your membership ended; ask an admin of "
            f"'{organization.name}' for a new one"
        )
    session.add(
        Membership(user_id=user.id, organization_id=organization.id, role=organization.invite_role)
    )
    flush_or_conflict(session, message)
    return schemas.JoinResult(organization=organization.name, role=organization.invite_role)
