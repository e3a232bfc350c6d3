"""HTTP middleware: per-caller rate limiting and request metrics.

A module of its own because it is a cross-cutting concern of the web layer that belongs to
no single router, and it would bury the app's assembly in `main.py`.
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp

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
        except Exception:  # noqa: BLE001 - a broken limiter store must not take the API down
            logger.warning("rate limiter storage unavailable; request allowed", exc_info=True)
            return await call_next(request)
        if not allowed:
            reset_at, _ = self.limiter.get_window_stats(self.limit, key)
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
