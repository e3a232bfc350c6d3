"""HTTP middleware, all plain ASGI: who the caller is (behind trusted proxies), request
metrics, the request body read and bounded before anything shared is held, per-caller rate
limits, a bound on requests in progress, retries of transactions the database aborted.

`install` stacks them, outermost first:

    ClientAddress → RequestMetrics → RequestSize → RateLimit → ConcurrencyLimit → Retry → app

so a request whose body is still arriving holds no slot, thread or connection, and one that
is refused (431, 413, 408, 429) never waits for a slot. Probes bypass the slots.

A module of its own because it is a cross-cutting concern of the web layer that belongs to
no single router, and it would bury the app's assembly in `main.py`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import random
import time
from collections.abc import Iterable, Sequence

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy.exc import DBAPIError
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from metrics import HTTP_LATENCY, HTTP_REQUESTS, scrape_authorized
from utils import Settings, user_id_from_token

logger = logging.getLogger(__name__)

PROBE_PATHS = frozenset({"/healthz", "/readyz"})
# Probes and docs are never throttled: a busy tenant must not fail the health check.
# `/metrics` is limited only for callers without the operator's token (RateLimitMiddleware).
UNLIMITED_PATHS = PROBE_PATHS | {"/docs", "/docs/oauth2-redirect", "/openapi.json"}
LOGIN_PATH = "/user/login"
# The dashboard's login form gets the same per-username and failed-login limits as the API's.
LOGIN_PATHS = frozenset({LOGIN_PATH, "/ui/login"})
# The dashboard's session cookie holds an access token: it names the caller for the rate
# limit as a bearer token does (`ui/session.py` sets it).
SESSION_COOKIE = "hv_session"
METRICS_PATH = "/metrics"

# The whole body must arrive within this time of the headers, else 408 (SPEC §2: slow
# connections must not take the service down; uvicorn itself never times a body out).
BODY_READ_TIMEOUT_SECONDS = 10.0
# The request line and headers together, at most (431 beyond). `main.py` gives uvicorn the
# same bound for a head still arriving; h11 checks only an incomplete one, so a head that
# arrives in one read is measured here.
MAX_HEADER_BYTES = 16 * 1024


def install(app: Starlette, settings: Settings) -> None:
    """Add the middleware stack to the app in its order (the last added runs first)."""
    app.add_middleware(RetryAbortedTransactionsMiddleware)
    app.add_middleware(ConcurrencyLimitMiddleware)
    if rate_limit_enabled(settings) or _limit_of(settings.login_rate_limit) is not None:
        app.add_middleware(RateLimitMiddleware, settings=settings)
    app.add_middleware(RequestSizeMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetricsMiddleware)
    app.add_middleware(ClientAddressMiddleware, trusted_proxies=settings.trusted_proxies)


# --- the caller's address --------------------------------------------------------------------

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def trusted_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """`HYPERVISOR_TRUSTED_PROXIES` entries as networks: an address, or a CIDR block."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            logger.warning("ignoring trusted proxy that is not an address entry=%r", entry)
    return tuple(networks)


def _address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_trusted(address: Address | None, trusted: Sequence[Network]) -> bool:
    return address is not None and any(address in network for network in trusted)


def client_address(peer: str, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The address a request is held against: the direct peer's, unless the peer is a
    trusted proxy; then the right-most `X-Forwarded-For` entry that is not itself a trusted
    proxy. Each proxy appends the address it was reached from, so that entry is the last one
    a trusted hop vouches for; anything left of it is whatever the client chose to send."""
    if not _is_trusted(_address(peer), trusted):
        return peer
    hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            return peer  # not what a proxy appends: hold the proxy itself responsible
        if not _is_trusted(address, trusted):
            return str(address)
    return str(_address(hops[0])) if hops else peer


class ClientAddressMiddleware:
    """Replaces `scope["client"]` by `client_address`: `X-Forwarded-For` counts only when
    the peer is one of `HYPERVISOR_TRUSTED_PROXIES`, and is ignored from anyone else."""

    def __init__(self, app: ASGIApp, trusted_proxies: Iterable[str]) -> None:
        self.app = app
        self.trusted = trusted_networks(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] in ("http", "websocket") and self.trusted and client:
            headers = Headers(scope=scope)
            forwarded = headers.getlist("x-forwarded-for")
            scope["client"] = (client_address(client[0], forwarded, self.trusted), client[1])
            # A TLS-terminating proxy says the request was https: the dashboard's cookie is
            # then marked Secure. Believed from a trusted proxy only, like the address.
            proto = headers.get("x-forwarded-proto", "").strip().lower()
            if proto in ("http", "https") and _is_trusted(_address(client[0]), self.trusted):
                scope["scheme"] = proto if scope["type"] == "http" else proto.replace("http", "ws")
        await self.app(scope, receive, send)


def _client_host(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


# --- request metrics -------------------------------------------------------------------------


class RequestMetricsMiddleware:
    """Counts and times every request by route template (not raw path: ids would explode
    the number of series). A client that left before any answer is counted as 499."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 499

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        except Exception:
            status = 500
            raise
        finally:
            template = getattr(scope.get("route"), "path", "unmatched")
            HTTP_REQUESTS.labels(scope["method"], template, str(status)).inc()
            HTTP_LATENCY.labels(scope["method"], template).observe(time.perf_counter() - started)


# --- the body --------------------------------------------------------------------------------


class BodyTooLarge(Exception):
    """The body passed the limit while it was being read."""


class ClientDisconnected(Exception):
    """The client went away before its body was complete."""


async def read_body(receive: Receive, limit: int | None = None) -> bytes:
    """The whole request body; `BodyTooLarge` as soon as more than `limit` bytes came."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        body += message.get("body", b"")
        if limit is not None and len(body) > limit:
            raise BodyTooLarge
        if not message.get("more_body", False):
            return bytes(body)


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands over the already read body once, then listens to the client
    again (for its disconnect)."""
    delivered = False

    async def receive_again() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive_again


def _head_size(scope: Scope) -> int:
    """The bytes of the request line and headers, as near as the scope tells."""
    line = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + 16
    return line + sum(len(name) + len(value) + 4 for name, value in scope["headers"])


def _declared_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length", "")
    return int(value) if value.isdigit() else None


async def _refuse_and_close(
    scope: Scope, receive: Receive, send: Send, status: int, detail: str, **headers: str
) -> None:
    """Answer with `{"detail": ...}` and close the connection: whatever of the body is still
    on its way is not read."""
    response = JSONResponse({"detail": detail}, status_code=status, headers=headers)
    response.headers["Connection"] = "close"
    await response(scope, receive, send)


class RequestSizeMiddleware:
    """Bounds each request's size and the time its body may take, and reads the whole body
    before the request holds anything shared, handing it on in one message.

    Headers larger than `max_header_bytes` are a 431. A body larger than
    `HYPERVISOR_MAX_BODY_BYTES` is a 413 — by its Content-Length before a byte is read,
    else (chunked) as soon as the count passes the limit — and one that has not fully
    arrived `read_timeout` seconds after the headers is a 408. Each closes the connection;
    no more than the limit is ever buffered per request."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        read_timeout: float = BODY_READ_TIMEOUT_SECONDS,
        max_header_bytes: int = MAX_HEADER_BYTES,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.read_timeout = read_timeout
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _head_size(scope) > self.max_header_bytes:
            detail = f"the request's headers are larger than {self.max_header_bytes} bytes"
            await _refuse_and_close(scope, receive, send, 431, detail)
            return
        too_large = f"the request body is larger than {self.max_body_bytes} bytes"
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await _refuse_and_close(scope, receive, send, 413, too_large)
            return
        try:
            async with asyncio.timeout(self.read_timeout):
                body = await read_body(receive, self.max_body_bytes)
        except BodyTooLarge:
            await _refuse_and_close(scope, receive, send, 413, too_large)
            return
        except TimeoutError:
            detail = f"the request body did not arrive within {self.read_timeout:g} s"
            await _refuse_and_close(scope, receive, send, 408, detail)
            return
        except ClientDisconnected:
            return
        await self.app(scope, replay(body, receive), send)


# --- rate limits -----------------------------------------------------------------------------


def _limit_of(text: str) -> RateLimitItem | None:
    """The parsed limit, or None when it is `0` (or empty): disabled."""
    return None if text.strip() in ("", "0") else parse(text)


def rate_limit_enabled(settings: Settings) -> bool:
    """False when `HYPERVISOR_RATE_LIMIT` is 0 (or empty)."""
    return _limit_of(settings.rate_limit) is not None


class RateLimitMiddleware:
    """Answers 429 with Retry-After once a caller exceeds its limit.

    - Ordinary requests count against `HYPERVISOR_RATE_LIMIT` for the user a valid bearer
      token names, else for the client address, so one noisy user cannot starve their
      colleagues behind the same NAT.
    - `/metrics` without the operator's token (when one is set) counts against the client
      address: a wrong token cannot be guessed at leisure. With the token it is never limited.
    - Logins are limited per username and by failures, not by the address's quota of other
      requests, so that neither a noisy neighbour behind the same address nor a stranger can
      lock a user out with traffic of their own:
        * every attempt counts against `HYPERVISOR_LOGIN_RATE_LIMIT` for its username
          (lowercased), counted before the password is checked so that parallel guesses
          are counted too: an account sees at most that many guesses per window;
        * a failed attempt (401) counts against `HYPERVISOR_RATE_LIMIT` for the address in
          a bucket of login failures only, and an address past it may not try again until
          the window moves: one source spraying many usernames is stopped, while successful
          logins and the address's other traffic never use that bucket up.
      What remains possible is deliberate: someone who fails on a username exhausts that
      username's attempts for the window (the price of bounding guesses per account), and
      whoever sprays from one address blocks logins from that address.

    Counting is delegated to the `limits` library; its storage (memory, or Redis shared by
    replicas) comes from `HYPERVISOR_RATE_LIMIT_STORAGE`. A broken store lets requests through.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.per_caller = _limit_of(settings.rate_limit)
        self.per_username = _limit_of(settings.login_rate_limit)
        self.limiter = MovingWindowRateLimiter(storage_from_string(settings.rate_limit_storage))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        if path in LOGIN_PATHS and scope["method"] == "POST":
            await self._login(scope, receive, send)
            return
        if path == METRICS_PATH:
            token = self.settings.metrics_token
            authorization = Headers(scope=scope).get("authorization", "")
            if not token or scrape_authorized(authorization, token):
                await self.app(scope, receive, send)
                return
            key = f"address:{_client_host(scope)}"
        else:
            key = self._caller(scope)
        refusal = self._refusal(self.per_caller, key, "rate limit")
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        failures = f"login-failures:address:{_client_host(scope)}"
        what = "failed-login limit for this address"
        refusal = self._refusal(self.per_caller, failures, what, count=False)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        try:
            body = await read_body(receive)  # already read and bounded by RequestSizeMiddleware
        except ClientDisconnected:
            return
        username = await _form_username(scope, body)
        if username is not None:
            key = f"login:username:{username.lower()[:64]}"
            refusal = self._refusal(self.per_username, key, "login limit for this username")
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        status = await _answer(self.app, scope, replay(body, receive), send)
        if status == 401:
            self._refusal(self.per_caller, failures, what)  # count the failure

    def _caller(self, scope: Scope) -> str:
        authorization = Headers(scope=scope).get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            token = ""
            if scope.get("path", "").startswith("/ui/"):
                token = Request(scope).cookies.get(SESSION_COOKIE, "")
        if token:
            user_id = user_id_from_token(token, self.settings)
            if user_id is not None:
                return f"user:{user_id}"
        return f"address:{_client_host(scope)}"

    def _refusal(
        self, item: RateLimitItem | None, key: str, what: str, *, count: bool = True
    ) -> JSONResponse | None:
        """None while `key` is within the limit (counting this request unless `count` is
        False), else the 429 to answer with. No limit, or a broken store, refuses nothing."""
        if item is None:
            return None
        try:
            if self.limiter.hit(item, key) if count else self.limiter.test(item, key):
                return None
            reset_at, _ = self.limiter.get_window_stats(item, key)
        except Exception:  # noqa: BLE001 - a broken limiter store must not take the API down
            logger.warning("rate limiter storage unavailable; request allowed", exc_info=True)
            return None
        retry_after = max(1, math.ceil(reset_at - time.time()))
        return JSONResponse(
            {"detail": f"{what} of {item} exceeded; retry in {retry_after} s"},
            status_code=429,
            headers={"Retry-After": str(retry_after)},
        )


async def _form_username(scope: Scope, body: bytes) -> str | None:
    """The `username` field of a login form, parsed as the route will parse it."""

    async def nothing_more() -> Message:
        return {"type": "http.disconnect"}

    request = Request(scope, replay(body, nothing_more))
    try:
        async with request.form() as form:
            username = form.get("username")
    except Exception:  # noqa: BLE001 - an unparsable form is the route's 422 to give
        return None
    return username if isinstance(username, str) else None


async def _answer(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> int | None:
    """Run the app; the status it answered with (None if it sent none)."""
    status: int | None = None

    async def recording_send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)

    await app(scope, receive, recording_send)
    return status


# --- requests in progress --------------------------------------------------------------------

# A request runs its dependencies and its route in separate worker-thread calls (AnyIO's
# pool of 40 threads), holding its database connection, and on SQLite the write turn, in
# between. With more requests in progress than threads, every thread can end up waiting
# for a connection or the turn that a request without a thread holds. Below this bound
# there is always a free thread; the rest wait here, in the event loop, in arrival order.
MAX_REQUESTS_IN_PROGRESS = 32


class ConcurrencyLimitMiddleware:
    """Lets at most `MAX_REQUESTS_IN_PROGRESS` requests run at once; others queue. Probes
    never queue behind tenants: they take no slot (`/healthz` needs no thread, `/readyz`
    runs one database check at a time however many probes ask). An event stream gives its
    slot back once its headers are sent: it lasts as long as its client, and between its
    short polls it holds no thread and no connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.slots: asyncio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        if self.slots is None:  # created inside the running event loop
            self.slots = asyncio.Semaphore(MAX_REQUESTS_IN_PROGRESS)
        slots = self.slots
        await slots.acquire()
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                slots.release()

        async def releasing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and _is_event_stream(message):
                release()
            await send(message)

        try:
            await self.app(scope, receive, releasing_send)
        finally:
            release()


def _is_event_stream(start: Message) -> bool:
    return any(
        name.lower() == b"content-type" and value.lower().startswith(b"text/event-stream")
        for name, value in start.get("headers", [])
    )


# --- retries ---------------------------------------------------------------------------------

# PostgreSQL's "deadlock detected" and "could not serialize": the transaction was rolled
# back whole, so running the request again is safe.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
MAX_ATTEMPTS = 4


def is_retryable(error: BaseException) -> bool:
    """True for a database error that aborted the transaction and may succeed if retried."""
    if not isinstance(error, DBAPIError):
        return False
    sqlstate = getattr(error.orig, "sqlstate", None)
    return sqlstate in RETRYABLE_SQLSTATES or "database is locked" in str(error.orig)


class RetryAbortedTransactionsMiddleware:
    """Runs a request again (bounded, with jittered backoff) when the database aborted its
    transaction as a deadlock victim or serialization failure, before any byte was sent.

    One transaction per request makes this safe: the aborted attempt left nothing behind.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(receive)  # bounded by RequestSizeMiddleware, outside
        except ClientDisconnected:
            return
        for attempt in range(1, MAX_ATTEMPTS + 1):
            response_started = False

            async def tracking_send(message: Message) -> None:
                nonlocal response_started
                response_started = True
                await send(message)

            try:
                await self.app(scope, replay(body, receive), tracking_send)
                return
            except Exception as error:
                if response_started or attempt == MAX_ATTEMPTS or not is_retryable(error):
                    raise
                logger.warning(
                    "transaction aborted, retrying attempt=%s error=%s",
                    attempt,
                    error.__class__.__name__,
                )
                await asyncio.sleep(random.uniform(0, 0.02 * 2**attempt))
