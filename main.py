"""The Hypervisor app: assembly, lifespan, error mapping. `python main.py` serves it."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

import middleware
import services
import ui
from database import make_engine, make_session_factory, migrate
from middleware import is_retryable
from routes import (
    clusters,
    deployments,
    docs,
    events,
    operations,
    organizations,
    status_of,
    users,
)
from utils import Settings, configure_logging, get_settings, signing_key, use_settings

logger = logging.getLogger(__name__)

DESCRIPTION = """
Hypervisor shares an organization's fixed CPU / RAM / GPU clusters between its members.
Log in with **Authorize** (username and password), then create organizations, clusters and
deployments. Every error body is `{"detail": ...}`.
"""


def create_app(settings: Settings | None = None, *, engine: Engine | None = None) -> FastAPI:
    """Build the app. Tests and embedders may pass settings, which are then installed as
    the process's (`utils.use_settings`: every layer reads that one place), and an already
    migrated engine."""
    if settings is not None:
        use_settings(settings)
    settings = get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not logging.getLogger().handlers:  # served by `uvicorn main:app`, not main()
            configure_logging(settings.log_level)
        signing_key(settings)  # refuses to start (SigningKeyError) with an unusable key
        own_engine = engine is None
        app.state.engine = engine or _migrated_engine(settings.database_url)
        app.state.session_factory = make_session_factory(app.state.engine)
        app.state.known_users = services.KnownUsers()
        events.reopen_streams(app)
        stop = asyncio.Event()
        loop = asyncio.create_task(_scheduler_loop(app, settings.scheduler_interval_seconds, stop))
        logger.info("hypervisor ready database=%s", app.state.engine.url.render_as_string())
        try:
            yield
        finally:
            # Let a tick in progress finish its passes: nothing is left half-applied.
            events.stop_streams(app)
            stop.set()
            await loop
            if own_engine:
                app.state.engine.dispose()
            logger.info("hypervisor stopped")

    app = FastAPI(
        title="Hypervisor",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url=None,  # served by _serve_docs_offline, with the docs
        docs_url=None,
        redoc_url=None,
    )
    _serve_docs_offline(app)
    for router in (
        users.router,
        organizations.router,
        clusters.router,
        deployments.router,
        operations.router,
        events.router,
        ui.router,
    ):
        app.include_router(router)
    # The caller's address, metrics, the body read and bounded, rate limits, the bound on
    # requests in progress, then retries of the work itself (a retry is counted once).
    middleware.install(app, settings)

    @app.exception_handler(services.DomainError)
    async def domain_error(_request: Request, error: services.DomainError) -> JSONResponse:
        status = status_of(error)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"detail": error.detail}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        # Never fails and never logs: what was rejected may be a password.
        return JSONResponse({"detail": safe_validation_errors(error.errors())}, status_code=422)

    @app.exception_handler(HTTPException)
    async def framework_error(request: Request, error: HTTPException) -> Response:
        if error.status_code == 400:
            # Only the framework raises these (the services' 400 is `BadRequest`): a body it
            # could not parse (not UTF-8, nested too deep, broken multipart). SPEC §2: 422.
            return JSONResponse({"detail": _echo_text(str(error.detail), 200)}, status_code=422)
        return await http_exception_handler(request, error)

    @app.exception_handler(OperationalError)
    async def database_busy(request: Request, error: OperationalError) -> JSONResponse:
        if not is_retryable(error):
            return await unexpected_error(request, error)
        # Still locked after the retries: the database is overloaded, not the request wrong.
        logger.warning("database busy method=%s path=%s", request.method, request.url.path)
        return JSONResponse(
            {"detail": "the database is busy; retry shortly"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error method=%s path=%s", request.method, request.url.path)
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    return app


def _serve_docs_offline(app: FastAPI) -> None:
    """/openapi.json and Swagger UI at /docs from files installed with the service, so the
    page renders on a machine without internet (FastAPI's own docs load from a CDN)."""
    app.include_router(docs.router)


# A 422 shows what was wrong, not what was sent: at most this much of any input value.
MAX_ECHOED_CHARACTERS = 100
MAX_ERRORS_SHOWN = 20


def safe_validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Validation errors as a JSON-safe `detail` list: inputs cut to a short prefix,
    non-finite numbers, lone surrogates and bytes made printable, `url` dropped, and at
    most `MAX_ERRORS_SHOWN` of them (a body of 100,000 unknown fields is one error's worth)."""
    shown: list[dict[str, Any]] = []
    for error in list(errors)[:MAX_ERRORS_SHOWN]:
        try:
            shown.append(_safe_error(error))
        except Exception:  # noqa: BLE001 - the answer is a 422 whatever the input held
            shown.append({"type": "invalid", "loc": [], "msg": "invalid input"})
    if len(errors) > MAX_ERRORS_SHOWN:
        more = len(errors) - MAX_ERRORS_SHOWN
        shown.append({"type": "too_many_errors", "loc": [], "msg": f"and {more} more errors"})
    return shown


def _safe_error(error: Any) -> dict[str, Any]:
    loc = [part if isinstance(part, int) else _echo_text(part) for part in error.get("loc", ())]
    safe: dict[str, Any] = {
        "type": _echo_text(error.get("type", "invalid")),
        "loc": loc[:10],
        "msg": _echo_text(error.get("msg", ""), 200),
    }
    if "input" in error:
        safe["input"] = _echo(error["input"])
    ctx = error.get("ctx")
    if isinstance(ctx, dict) and ctx:
        safe["ctx"] = {_echo_text(key): _echo(value) for key, value in list(ctx.items())[:10]}
    return safe


def _echo(value: Any) -> Any:
    """A short, JSON-encodable stand-in for an input value."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) < 10**30:
            return value
        try:
            return _echo_text(str(value))
        except ValueError:  # more digits than Python converts
            return "a very large integer"
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, str):
        return _echo_text(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return _echo_text(bytes(value[: 4 * MAX_ECHOED_CHARACTERS]).decode("utf-8", "replace"))
    return _echo_text(_json_prefix(value))


def _json_prefix(value: Any) -> str:
    """The start of the value's JSON text, encoding no more of it than is shown."""
    encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=True, default=lambda _: "...")
    text = ""
    try:
        for chunk in encoder.iterencode(value):
            text += chunk
            if len(text) > MAX_ECHOED_CHARACTERS:
                break
    except Exception:  # noqa: BLE001 - whatever it was, a prefix is all that is shown
        text += "..."
    return text


def _echo_text(value: Any, limit: int = MAX_ECHOED_CHARACTERS) -> str:
    """Text cut to `limit` characters, lone surrogates written as escapes."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


async def _scheduler_loop(app: FastAPI, interval: float, stop: asyncio.Event) -> None:
    """Every interval, or sooner when a timed deployment ends before that: end elapsed
    deployments and re-run passes (SPEC §5), then forecast what changed, off the event
    loop's thread, with sessions of its own. Returns between ticks once `stop` is set."""
    wait = interval
    budget, credited = FORECAST_BURST_SECONDS, time.monotonic()
    while not stop.is_set():
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=wait)
        if stop.is_set():
            return
        factory = app.state.session_factory
        try:
            await asyncio.to_thread(services.run_periodic_passes, factory)
            # The next end is read before the forecasts, whose time then comes off the wait:
            # an end falling due while they run is handed on at once, not an interval late.
            to_next_end = await asyncio.to_thread(services.seconds_to_next_end, factory)
            asked = time.monotonic()
            budget, credited = forecast_budget(budget, asked - credited), asked
            if budget > 0:
                await asyncio.to_thread(services.refresh_forecasts, factory)
                budget -= time.monotonic() - asked
            wait = next_wait(interval, to_next_end, spent=time.monotonic() - asked)
        except Exception:
            logger.exception("scheduler tick failed")
            wait = interval


# Forecasts run in this process beside the requests, under one interpreter lock: over time
# they may take at most this share of it. A cluster with 10,000 pending takes about 0.4 s to
# forecast; after every change, that would slow every request sharing the process. Cheap
# forecasts (milliseconds) never reach the bound: they run on every tick.
FORECAST_SHARE = 0.25
FORECAST_BURST_SECONDS = 1.0  # forecasting time saved up while idle, spent in a burst


def forecast_budget(
    budget: float,
    elapsed: float,
    share: float = FORECAST_SHARE,
    burst: float = FORECAST_BURST_SECONDS,
) -> float:
    """The loop's forecasting time left after `elapsed` seconds more: it accrues at `share`
    seconds per second, up to `burst`; each forecast spends what it took, and the loop
    forecasts only while some is left."""
    return min(burst, budget + elapsed * share)


def next_wait(interval: float, seconds_to_next_end: float | None, spent: float = 0.0) -> float:
    """How long the loop sleeps: its interval, or until the next known end if that comes
    sooner, so freed room is handed on when the forecast says it is (within 10 ms); `spent`:
    seconds since `seconds_to_next_end` was read."""
    if seconds_to_next_end is None:
        return interval
    return min(interval, max(seconds_to_next_end - spent, 0.01))


def _migrated_engine(url: str) -> Engine:
    migrate(url)
    return make_engine(url)


class _Server(uvicorn.Server):
    """uvicorn, ending the app's live event streams as soon as a stop signal arrives: it
    waits for open responses to finish before it shuts the app down."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        events.stop_streams(app)
        super().handle_exit(sig, frame)


app = create_app()

# What `python main.py` bounds at the connection level (the body is bounded by the
# middleware, SPEC §2). h11, not httptools: httptools takes request headers of any size.
KEEP_ALIVE_SECONDS = 5  # an idle keep-alive connection is closed after this
MAX_CONNECTIONS = 1000  # open connections and requests together; beyond, uvicorn answers 503
BACKLOG = 2048  # connections the kernel may queue before they are accepted

if __name__ == "__main__":
    settings = get_settings()
    configure_logging(settings.log_level)
    # log_config=None: uvicorn installs no handlers of its own, so its lines propagate to
    # the root handler above and share its key=value format.
    server = _Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            log_config=None,
            access_log=False,
            http="h11",
            h11_max_incomplete_event_size=middleware.MAX_HEADER_BYTES,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            limit_concurrency=MAX_CONNECTIONS,
            backlog=BACKLOG,
            # X-Forwarded-For is believed only from HYPERVISOR_TRUSTED_PROXIES, and by the
            # middleware (ClientAddressMiddleware); uvicorn's own default trusts 127.0.0.1.
            proxy_headers=False,
        )
    )
    with suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(3)  # what `uvicorn.run` exits with when the app fails to start
