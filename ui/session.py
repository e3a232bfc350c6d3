"""The dashboard's session and CSRF tokens.

The session is the API's own access token, kept in a cookie that scripts cannot read
(HttpOnly), that the browser sends only to the dashboard (Path=/ui) and never with a
request another site started (SameSite=Strict), and only over TLS when the page came over
TLS (Secure). It expires with the token. Nothing is kept on the server: logging out clears
the cookie, and the token itself stays valid until its expiry, as an API token does.

Every state-changing form carries a CSRF token: an HMAC of the session token under the
signing key, so it cannot be computed without the key and changes with every login. The
login form, which has no session yet, is bound the same way to a random pre-session cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from fastapi import Request, Response

from middleware import SESSION_COOKIE
from utils import Settings, signing_key, utcnow

COOKIE_PATH = "/ui"
LOGIN_COOKIE = "hv_login"
LOGIN_COOKIE_PATH = "/ui/login"
LOGIN_COOKIE_SECONDS = 3600
CSRF_FIELD = "csrf_token"


def session_token(request: Request) -> str | None:
    """The access token the session cookie holds, if any (checked by the caller)."""
    return request.cookies.get(SESSION_COOKIE) or None


def start_session(request: Request, response: Response, token: str, expires_in: int) -> None:
    """Set the session cookie to the token, expiring with it."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=expires_in,
        expires=utcnow() + timedelta(seconds=expires_in),
        path=COOKIE_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    response.delete_cookie(LOGIN_COOKIE, path=LOGIN_COOKIE_PATH, httponly=True, samesite="strict")


def end_session(request: Request, response: Response) -> None:
    """Clear the session cookie."""
    response.delete_cookie(
        SESSION_COOKIE,
        path=COOKIE_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def csrf_token(bound_to: str, settings: Settings) -> str:
    """The CSRF token of forms sent under this session (or pre-session) value."""
    key = signing_key(settings).encode()
    return hmac.new(key, b"hv-ui-csrf\x00" + bound_to.encode(), hashlib.sha256).hexdigest()


def csrf_valid(bound_to: str | None, sent: object, settings: Settings) -> bool:
    """True when the form's token is the one of this session, compared in constant time."""
    if not bound_to or not isinstance(sent, str) or not sent:
        return False
    return hmac.compare_digest(csrf_token(bound_to, settings), sent)


def login_binding(request: Request) -> str:
    """The pre-session value the login form's CSRF token is bound to: the browser's, or a
    new random one (`keep_login_binding` sets it on the response)."""
    return request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)


def keep_login_binding(request: Request, response: Response, value: str) -> None:
    """Set the pre-session cookie, readable by the login form's handler only."""
    response.set_cookie(
        LOGIN_COOKIE,
        value,
        max_age=LOGIN_COOKIE_SECONDS,
        path=LOGIN_COOKIE_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
