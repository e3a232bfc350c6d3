"""HTTP middleware: a bound on requests in progress, per-caller rate limiting, request
metrics, retries of transactions the database aborted.

A module of its own because it is a cross-cutting concern of the web layer that belongs to
no single router, and it would bury the app's assembly in `main.py`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy.exc import DBAPIError
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from metrics import HTTP_LATENCY, HTTP_REQUESTS
from utils import Settings, user_id_from_token

logger = logging.getLogger(__name__)

# Probes, scrapes and docs are never throttled: a busy tenant must not fail the health check.
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"})


class RateLimitMiddleware(BaseHTTPMiddleware):
    """Answers 429 with Retry-After once a caller exceeds `HYPERVISOR_RATE_LIMIT`.

    The caller is the user a valid bearer token names, else the client address, so one
    noisy user cannot starve their colleagues behind the same NAT. Counting is delegated
    to the `limits` library; its storage (memory, or Redis shared by replicas) comes from
    `HYPERVISOR_RATE_LIMIT_STORAGE`.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        super().__init__(app)
        self.settings = settings
        self.limit: RateLimitItem = parse(settings.rate_limit)
        self.limiter = MovingWindowRateLimiter(storage_from_string(settings.rate_limit_storage))

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.url.path in UNLIMITED_PATHS:
            return await call_next(request)
        key = self._caller(request)
        try:
            allowed = self.limiter.hit(self.limit, key)
            if not allowed:
                reset_at, _ = self.limiter.get_window_stats(self.limit, key)
        except Exception:  # noqa: BLE001 - a broken limiter store must not take the API down
            logger.warning("rate limiter storage unavailable; request allowed", exc_info=True)
            return await call_next(request)
        if not allowed:
            retry_after = max(1, math.ceil(reset_at - time.time()))
            return JSONResponse(
                {"detail": f"rate limit of {self.settings.rate_limit} exceeded; retry later"},
                status_code=429,
                headers={"Retry-After": str(retry_after)},
            )
        return await call_next(request)

    def _caller(self, request: Request) -> str:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token:
            user_id = user_id_from_token(token, self.settings)
            if user_id is not None:
                return f"user:{user_id}"
        return f"address:{request.client.host if request.client else 'unknown'}"


def rate_limit_enabled(settings: Settings) -> bool:
    """False when `HYPERVISOR_RATE_LIMIT` is 0 (or empty)."""
    return settings.rate_limit.strip() not in ("", "0")


class RequestMetricsMiddleware(BaseHTTPMiddleware):
    """Counts and times every request by route template (not raw path: ids would explode
    the number of series)."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", "unmatched")
            HTTP_REQUESTS.labels(request.method, template, str(status)).inc()
            HTTP_LATENCY.labels(request.method, template).observe(time.perf_counter() - started)


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
        body = await _read_body(receive)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            response_started = False
            replayed = False

            async def replay() -> Message:
                # The body once, then the client's own messages: a streaming response waits
                # on them for the disconnect (answering at once would spin the event loop).
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            async def tracking_send(message: Message) -> None:
                nonlocal response_started
                response_started = True
                await send(message)

            try:
                await self.app(scope, replay, tracking_send)
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


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


# A request runs its dependencies and its route in separate worker-thread calls (AnyIO's
# pool of 40 threads), holding its database connection, and on SQLite the write turn, in
# between. With more requests in progress than threads, every thread can end up waiting
# for a connection or the turn that a request without a thread holds. Below this bound
# there is always a free thread; the rest wait here, in the event loop, in arrival order.
MAX_REQUESTS_IN_PROGRESS = 32


class ConcurrencyLimitMiddleware:
    """Lets at most `MAX_REQUESTS_IN_PROGRESS` requests run at once; others queue. An event
    stream gives its slot back once its headers are sent: it lasts as long as its client,
    and between its short polls it holds no thread and no connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.slots: asyncio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
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
