"""Domain errors: what the rules refuse, one class per kind, mapped to status codes in `main.py`.

Services speak the domain, never HTTP, so the scheduler loop and tests call them without a
request.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session


class DomainError(Exception):
    """A request that the rules refuse; `main.py` maps each kind to one status code."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Unauthorized(DomainError):
    """No valid credentials."""


class Forbidden(DomainError):
    """A member whose role is too low for the action."""


class NotFound(DomainError):
    """Does not exist, or the caller may not know that it exists."""


class Conflict(DomainError):
    """Duplicate name or a state that does not allow the change."""


class Invalid(DomainError):
    """Well-formed input that the current state makes meaningless (422)."""


class BadRequest(DomainError):
    """A request that cannot be honoured as sent (400), e.g. an unknown invite code."""


def flush_or_conflict(session: Session, message: str) -> None:
    """Flush, turning a unique-constraint race lost to another request into a Conflict."""
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as error:
        raise Conflict(message) from error
