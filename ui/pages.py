"""The dashboard's pages at /ui: server-rendered HTML over the same services as the API.

Each page reads in one read-only transaction; each form's change runs in a transaction of
its own, rolled back whole when the service refuses it (the page then shows the refusal
with its status code, as the API would answer it). Not logged in: pages redirect to the
login form, while the live fragment and stream (fetched by the page's script) answer 401.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Header, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

import schemas
import services
from models import User
from routes import status_of, user_of_token
from routes.events import STREAM_HEADERS, event_stream
from services import dashboard
from ui import forms
from ui import session as cookies
from ui.timeline import COMPACT, WIDE, draw
from utils import Settings, create_access_token, get_settings, utcnow

HERE = Path(__file__).resolve().parent
STATIC = {
    "dashboard.css": ("text/css; charset=utf-8", (HERE / "static" / "dashboard.css").read_bytes()),
    "dashboard.js": (
        "text/javascript; charset=utf-8",
        (HERE / "static" / "dashboard.js").read_bytes(),
    ),
}
# Pages load nothing from elsewhere and run no inline script; nobody may frame them.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{2,62}")
WHOLE_NUMBER = forms.WHOLE_NUMBER
FORGED = (
    "this form did not come from your dashboard session (a missing or wrong CSRF token); "
    "reload the page and try again"
)


class UIRoute(APIRoute):
    """A dashboard route: every answer carries the security headers, and a page is never
    cached (it shows one person's view of live state)."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def secured(request: Request) -> Response:
            response: Response = await handler(request)
            response.headers.update(SECURITY_HEADERS)
            response.headers.setdefault("Cache-Control", "no-store")
            return response

        return secured


router = APIRouter(prefix="/ui", include_in_schema=False, route_class=UIRoute)
templates = Jinja2Templates(directory=HERE / "templates")


def _when(moment: datetime | None) -> str:
    """A moment in UTC, with the date only when it is not today."""
    if moment is None:
        return "—"
    moment = moment.astimezone(UTC)
    today = utcnow().astimezone(UTC).date()
    layout = "%H:%M:%S" if moment.date() == today else "%Y-%m-%d %H:%M:%S"
    return moment.strftime(layout) + " UTC"


def _relative(moment: datetime | None) -> str:
    """How far a moment is from now, in words: "in 4 min", "12 s ago"."""
    if moment is None:
        return ""
    seconds = (moment - utcnow()).total_seconds()
    return f"in {_duration(seconds)}" if seconds >= 0 else f"{_duration(-seconds)} ago"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


templates.env.filters["when"] = _when
templates.env.filters["relative"] = _relative
templates.env.filters["duration"] = _duration


# --- sessions and transactions ------------------------------------------------------------


def _factory(request: Request) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = request.app.state.session_factory
    return factory


@contextmanager
def _reading(request: Request) -> Iterator[Session]:
    """A transaction that only reads (on SQLite, a snapshot that never waits for writers)."""
    with services.transaction(_factory(request), read_only=True) as session:
        yield session


def _user(request: Request) -> User | None:
    """The user the session cookie's token names, if it is valid and unexpired."""
    token = cookies.session_token(request)
    if token is None:
        return None
    try:
        return user_of_token(request, token)
    except services.Unauthorized:
        return None


def _to_login(request: Request, back: str | None = None) -> Response:
    """Back to the login form, which returns here afterwards (to `back` after a form's
    post: the page the form was on)."""
    target = back or request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response = RedirectResponse(f"/ui/login?next={quote(target)}", status_code=303)
    cookies.end_session(request, response)  # an expired or unknown token is no session
    return response


def _safe_next(target: str) -> str:
    """Where to go after logging in: a dashboard path only, never another site."""
    if target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/"


def _render(
    request: Request,
    template: str,
    user: User | None,
    status_code: int = 200,
    **context: Any,
) -> Response:
    settings = get_settings()
    token = cookies.session_token(request) if user is not None else None
    return templates.TemplateResponse(
        request,
        template,
        {
            "user": user,
            "csrf_field": cookies.CSRF_FIELD,
            "csrf": cookies.csrf_token(token, settings) if token else "",
            "status_code": status_code,
            **context,
        },
        status_code=status_code,
    )


def _refusal(request: Request, user: User | None, error: services.DomainError) -> Response:
    """A page saying why the request was refused, with the API's status code for it."""
    if isinstance(error, services.Unauthorized):
        return _to_login(request)
    status = status_of(error)
    return _render(request, "error.html", user, status, status=status, message=error.detail)


def _forged(request: Request, user: User | None) -> Response:
    return _render(request, "error.html", user, 403, status=403, message=FORGED)


def _csrf_ok(request: Request, sent: str, settings: Settings) -> bool:
    return cookies.csrf_valid(cookies.session_token(request), sent, settings)


def _not_found(request: Request, user: User | None, what: str) -> Response:
    return _refusal(request, user, services.NotFound(f"{what} not found"))


def _name_or_none(text: str) -> str | None:
    """A path segment that can name an organization or cluster, else None (not found)."""
    return text if NAME.fullmatch(text) else None


# --- static files, login, logout ---------------------------------------------------------


@router.get("/static/{name}")
def static(name: str) -> Response:
    """The dashboard's stylesheet and script (no build step: served as written)."""
    if name not in STATIC:
        return Response("not found", status_code=404, media_type="text/plain")
    media_type, content = STATIC[name]
    return Response(content, media_type=media_type, headers={"Cache-Control": "max-age=300"})


@router.get("")
def root() -> Response:
    """/ui is the organizations page at /ui/."""
    return RedirectResponse("/ui/", status_code=307)


@router.get("/login")
def login_form(request: Request, next: str = "/ui/") -> Response:
    """The login form; someone already logged in goes straight on."""
    if _user(request) is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return _login_page(request, _safe_next(next))


def _login_page(
    request: Request, target: str, status_code: int = 200, message: str | None = None
) -> Response:
    binding = cookies.login_binding(request)
    response = _render(
        request,
        "login.html",
        None,
        status_code,
        next=target,
        login_csrf=cookies.csrf_token(binding, get_settings()),
        message=message,
    )
    cookies.keep_login_binding(request, response, binding)
    if status_code == 401:
        response.headers["WWW-Authenticate"] = 'FormBased realm="hypervisor dashboard"'
    return response


@router.post("/login")
def login(
    request: Request,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/ui/",
) -> Response:
    """Check the credentials with the service POST /user/login uses; start a session."""
    settings = get_settings()
    target = _safe_next(next)
    if not cookies.csrf_valid(request.cookies.get(cookies.LOGIN_COOKIE), csrf_token, settings):
        return _login_page(request, target, 403, FORGED)
    try:
        with _reading(request) as session:
            user = services.authenticate(session, username, password)
    except services.Unauthorized as error:
        # 401, so that the rate limiter counts the failure as it does the API's.
        return _login_page(request, target, 401, error.detail)
    token, expires_in = create_access_token(user.id, settings)
    response = RedirectResponse(target, status_code=303)
    cookies.start_session(request, response, token, expires_in)
    return response


@router.post("/logout")
def logout(request: Request, csrf_token: Annotated[str, Form()] = "") -> Response:
    """End the session (clear its cookie); the token itself lives until its expiry."""
    user = _user(request)
    if user is not None and not _csrf_ok(request, csrf_token, get_settings()):
        return _forged(request, user)
    response = RedirectResponse("/ui/login", status_code=303)
    cookies.end_session(request, response)
    return response


# --- organizations ----------------------------------------------------------------------


@router.get("/")
def home(request: Request) -> Response:
    """Your organizations, each with its clusters and their capacity."""
    user = _user(request)
    if user is None:
        return _to_login(request)
    try:
        with _reading(request) as session:
            organizations = dashboard.organizations_of(session, user)
    except services.DomainError as error:
        return _refusal(request, user, error)
    return _render(request, "home.html", user, organizations=organizations, single=False)


@router.get("/orgs/{org_name}")
def organization(request: Request, org_name: str) -> Response:
    """One organization's clusters and their capacity."""
    user = _user(request)
    if user is None:
        return _to_login(request)
    if _name_or_none(org_name) is None:
        return _not_found(request, user, f"organization '{org_name[:63]}'")
    try:
        with _reading(request) as session:
            summary = dashboard.organization_summary(session, user, org_name)
    except services.DomainError as error:
        return _refusal(request, user, error)
    return _render(request, "home.html", user, organizations=[summary], single=True)


# --- a cluster ------------------------------------------------------------------------------


def _cluster_context(request: Request, user: User, org_name: str, cluster_name: str) -> Any:
    with _reading(request) as session:
        page = dashboard.cluster_page(session, user, org_name, cluster_name, utcnow())
    return {
        "page": page,
        "drawing": draw(page.timeline, WIDE),
        "compact": draw(page.timeline, COMPACT),
    }


def _cluster_page(
    request: Request,
    user: User,
    org_name: str,
    cluster_name: str,
    status_code: int = 200,
    **context: Any,
) -> Response:
    if _name_or_none(org_name) is None or _name_or_none(cluster_name) is None:
        return _not_found(request, user, f"cluster '{cluster_name[:63]}'")
    try:
        found = _cluster_context(request, user, org_name, cluster_name)
    except services.DomainError as error:
        return _refusal(request, user, error)
    form = context.pop("form", None) or {"cpu": "1", "ram": "1", "gpu": "0", "priority": "0"}
    return _render(request, "cluster.html", user, status_code, form=form, **found, **context)


@router.get("/orgs/{org_name}/clusters/{cluster_name}")
def cluster(request: Request, org_name: str, cluster_name: str) -> Response:
    """A cluster: capacity, queue, running list and timeline, live; create and preview."""
    user = _user(request)
    if user is None:
        return _to_login(request)
    return _cluster_page(request, user, org_name, cluster_name)


@router.get("/orgs/{org_name}/clusters/{cluster_name}/live")
def cluster_live(request: Request, org_name: str, cluster_name: str) -> Response:
    """The live part of the cluster page, as an HTML fragment the page's script swaps in."""
    user = _user(request)
    if user is None:
        return Response("log in again", status_code=401, media_type="text/plain")
    if _name_or_none(org_name) is None or _name_or_none(cluster_name) is None:
        return Response("not found", status_code=404, media_type="text/plain")
    try:
        found = _cluster_context(request, user, org_name, cluster_name)
    except services.DomainError as error:
        return Response(error.detail, status_code=status_of(error), media_type="text/plain")
    return _render(request, "_cluster_live.html", user, **found)


@router.get("/orgs/{org_name}/clusters/{cluster_name}/stream")
def cluster_stream(
    request: Request,
    org_name: str,
    cluster_name: str,
    after: int = 0,
    last_event_id: Annotated[int | None, Header(alias="Last-Event-ID")] = None,
) -> Response:
    """The cluster's events as Server-Sent Events, for the page's script: the API's stream,
    authenticated by the session cookie, from `Last-Event-ID` on a reconnect."""
    user = _user(request)
    if user is None:
        return Response("log in again", status_code=401, media_type="text/plain")
    if _name_or_none(org_name) is None or _name_or_none(cluster_name) is None:
        return Response("not found", status_code=404, media_type="text/plain")
    start = last_event_id if last_event_id is not None else after
    if not 0 <= start <= schemas.MAX_ID:
        return Response("bad cursor", status_code=422, media_type="text/plain")
    try:
        with _reading(request) as session:
            feed = services.event_feed(session, user, org_name, cluster_name)
    except services.DomainError as error:
        return Response(error.detail, status_code=status_of(error), media_type="text/plain")
    stream = event_stream(request.app, services.EventFollower(feed, start))
    return StreamingResponse(stream, media_type="text/event-stream", headers=STREAM_HEADERS)


@router.post("/orgs/{org_name}/clusters/{cluster_name}/deployments")
def submit(
    request: Request,
    org_name: str,
    cluster_name: str,
    action: Annotated[str, Form()] = "create",
    csrf_token: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    docker_image: Annotated[str, Form()] = "",
    cpu: Annotated[str, Form()] = "",
    ram: Annotated[str, Form()] = "",
    gpu: Annotated[str, Form()] = "",
    priority: Annotated[str, Form()] = "",
    duration: Annotated[str, Form()] = "",
    depends_on: Annotated[str, Form()] = "",
) -> Response:
    """Create a deployment, or preview what a create would do (nothing is stored)."""
    user = _user(request)
    if user is None:
        return _to_login(request, request.url.path.removesuffix("/deployments"))
    if not _csrf_ok(request, csrf_token, get_settings()):
        return _forged(request, user)
    if _name_or_none(org_name) is None or _name_or_none(cluster_name) is None:
        return _not_found(request, user, f"cluster '{cluster_name[:63]}'")
    form = {
        "name": name,
        "docker_image": docker_image,
        "cpu": cpu,
        "ram": ram,
        "gpu": gpu,
        "priority": priority,
        "duration": duration,
        "depends_on": depends_on,
    }

    def again(status_code: int, **context: Any) -> Response:
        return _cluster_page(
            request, user, org_name, cluster_name, status_code, form=form, **context
        )

    if action not in ("create", "preview"):
        # A button the page does not have: refuse it rather than take it for a create.
        return again(422, error=f"unknown action {action[:20]!r}: create or preview")
    try:
        body = forms.deployment_body(org_name, cluster_name, form)
    except forms.FormError as error:
        return again(422, error=str(error))
    except ValidationError as error:
        return again(422, error=forms.validation_message(error))
    try:
        # A transaction of its own: a refusal rolls back whatever the service had begun.
        with services.transaction(_factory(request)) as session:
            if action == "preview":
                preview = services.preview_deployment(session, user, body)
            else:
                created = services.create_deployment(session, user, body)
    except services.DomainError as error:
        if isinstance(error, services.NotFound | services.Unauthorized):
            return _refusal(request, user, error)
        return again(status_of(error), error=error.detail)
    if action == "preview":
        return again(200, preview=preview)
    return RedirectResponse(f"/ui/deployments/{created.id}", status_code=303)


# --- a deployment ---------------------------------------------------------------------------


def _deployment_id(text: str) -> int | None:
    if not WHOLE_NUMBER.fullmatch(text):
        return None
    number = int(text)
    return number if 1 <= number <= schemas.MAX_ID else None


def _deployment_page(
    request: Request, user: User, deployment_id: int, status_code: int = 200, **context: Any
) -> Response:
    try:
        with _reading(request) as session:
            page = dashboard.deployment_page(session, user, deployment_id)
    except services.DomainError as error:
        return _refusal(request, user, error)
    return _render(request, "deployment.html", user, status_code, page=page, **context)


@router.get("/deployments/{deployment_id}")
def deployment(request: Request, deployment_id: str) -> Response:
    """A deployment with its fields and events; cancel for developers and admins."""
    user = _user(request)
    if user is None:
        return _to_login(request)
    number = _deployment_id(deployment_id)
    if number is None:
        return _not_found(request, user, f"deployment {deployment_id[:20]}")
    return _deployment_page(request, user, number)


@router.post("/deployments/{deployment_id}/cancel")
def cancel(
    request: Request, deployment_id: str, csrf_token: Annotated[str, Form()] = ""
) -> Response:
    """Cancel a deployment (developers and admins), then show its page again."""
    user = _user(request)
    if user is None:
        return _to_login(request, request.url.path.removesuffix("/cancel"))
    if not _csrf_ok(request, csrf_token, get_settings()):
        return _forged(request, user)
    number = _deployment_id(deployment_id)
    if number is None:
        return _not_found(request, user, f"deployment {deployment_id[:20]}")
    try:
        with services.transaction(_factory(request)) as session:
            services.cancel_deployment(session, user, number)
    except services.DomainError as error:
        if isinstance(error, services.NotFound | services.Unauthorized):
            return _refusal(request, user, error)
        return _deployment_page(request, user, number, status_of(error), error=error.detail)
    return RedirectResponse(f"/ui/deployments/{number}", status_code=303)
