"""The Hypervisor app: assembly, lifespan, error mapping. `python main.py` serves it."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from types import FrameType

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

import services
from database import make_engine, make_session_factory, migrate
from middleware import (
    ConcurrencyLimitMiddleware,
    RateLimitMiddleware,
    RequestMetricsMiddleware,
    RetryAbortedTransactionsMiddleware,
    is_retryable,
    rate_limit_enabled,
)
from routes import clusters, deployments, events, operations, organizations, users
from utils import Settings, configure_logging, get_settings, signing_key, use_settings

logger = logging.getLogger(__name__)

STATUS_OF_ERROR: dict[type[services.DomainError], int] = {
    services.BadRequest: 400,
    services.Unauthorized: 401,
    services.Forbidden: 403,
    services.NotFound: 404,
    services.Conflict: 409,
    services.Invalid: 422,
}


def status_of(error: services.DomainError) -> int:
    """The status code of a domain error: that of the nearest class in its ancestry, so a
    subclass of `Conflict` is still a 409."""
    for kind in type(error).__mro__:
        if kind in STATUS_OF_ERROR:
            return STATUS_OF_ERROR[kind]
    return 400


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

    app = FastAPI(title="Hypervisor", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    for router in (
        users.router,
        organizations.router,
        clusters.router,
        deployments.router,
        operations.router,
        events.router,
    ):
        app.include_router(router)
    # The last added runs first: bound requests in progress, time them, rate-limit them,
    # and retry only the work itself, so a retried request is counted once.
    app.add_middleware(RetryAbortedTransactionsMiddleware)
    if rate_limit_enabled(settings):
        app.add_middleware(RateLimitMiddleware, settings=settings)
    app.add_middleware(RequestMetricsMiddleware)
    app.add_middleware(ConcurrencyLimitMiddleware)

    @app.exception_handler(services.DomainError)
    async def domain_error(_request: Request, error: services.DomainError) -> JSONResponse:
        status = status_of(error)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"detail": error.detail}, status_code=status, headers=headers)

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


async def _scheduler_loop(app: FastAPI, interval: float, stop: asyncio.Event) -> None:
    """Every interval: end elapsed deployments and re-run passes (SPEC §5), off the event
    loop's thread, with sessions of its own. Returns between ticks once `stop` is set."""
    while not stop.is_set():
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
        if stop.is_set():
            return
        try:
            await asyncio.to_thread(services.run_periodic_passes, app.state.session_factory)
        except Exception:
            logger.exception("scheduler tick failed")


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

if __name__ == "__main__":
    settings = get_settings()
    configure_logging(settings.log_level)
    server = _Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=False,
        )
    )
    with suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(3)  # what `uvicorn.run` exits with when the app fails to start
