"""The composition root: Settings -> adapters -> services -> FastAPI.

This is the only module that names concrete adapters. They are imported inside the factory
functions, so the service image (no torch) never imports the in-process model, and every
SDK client is built in the lifespan, once, with explicit timeouts, and closed on shutdown.
Tests call `create_app(settings, backends=Backends(...fakes...))`.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from typing import Any

import anyio
import structlog
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.api.routes import analyses, analyze, edge_logs, health
from app.config import ConfigError, Settings
from app.domain.ports import (
    AnalysisRepository,
    Analytics,
    Backends,
    ImageStore,
    LogDestination,
    ReportWriter,
    TokenVerifier,
    VisionModel,
)
from app.errors import AppError
from app.errors_http import install_error_handlers
from app.logging import configure_logging
from app.middleware import RequestContextMiddleware
from app.services.analysis import AnalysisService, Limits, VisionOptions
from app.services.edge_logs import EdgeLogShipper
from app.services.history import HistoryService
from app.services.latency import LatencyMonitor
from app.services.monitoring import RequestMonitor
from app.services.ratelimit import RateLimiter

log = structlog.get_logger("app")

VERSION = "0.1.0"


def create_app(settings: Settings | None = None, *, backends: Backends | None = None) -> FastAPI:
    """Build the app; backends given here replace the ones the settings would build."""
    settings = settings or Settings()
    settings.check_backends()
    configure_logging(fmt=settings.log_format, level=settings.log_level)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            try:
                given = backends or await build_backends(settings, stack)
                # The database and auth come from the settings unless given: tests that fake the
                # outside world still run on a real database and the real token check.
                built = replace(
                    given,
                    repository=given.repository or await _build_repository(settings, stack),
                    verifier=given.verifier or await _build_verifier(settings, stack),
                )
            except ConfigError as exc:  # e.g. MODEL_ID not on the hub: say what to fix before the traceback
                log.error("startup_failed", detail=str(exc))
                raise
            assert built.repository is not None
            analyzer = AnalysisService(
                store=built.store,
                vision=built.vision,
                writer=built.writer,
                repository=built.repository,
                options=VisionOptions(
                    questions=settings.vision_questions,
                    caption_max_new_tokens=settings.vision_caption_max_new_tokens,
                    answer_max_new_tokens=settings.vision_answer_max_new_tokens,
                ),
                limits=Limits(cache_ttl_s=settings.cache_ttl_seconds, daily_quota=settings.daily_quota),
            )
            salt = settings.posthog_id_salt
            monitor = RequestMonitor(
                latency=LatencyMonitor(
                    slo_ms=settings.latency_slo_ms,
                    window_s=settings.latency_window_seconds,
                    min_samples=settings.latency_min_samples,
                ),
                analytics=await _build_analytics(settings, stack),
                id_salt=salt.get_secret_value().encode() if salt else b"",
                instance=socket.gethostname(),
            )
            edge_shipper = await _build_edge_shipper(settings, stack)
            if settings.auth_mode == "disabled":
                log.warning("auth_disabled", user_id=settings.local_user_id)
            log.info(
                "started",
                storage=settings.storage_backend,
                vision=built.vision.name,
                writer=built.writer.name,
                environment=settings.environment,
                posthog=monitor.analytics is not None,
                edge_logs=edge_shipper.destination.name if edge_shipper else None,
            )
            yield {
                "settings": settings,
                "backends": built,
                "analyzer": analyzer,
                "history": HistoryService(repository=built.repository, store=built.store),
                "rate_limiter": RateLimiter(settings.rate_limit_per_minute) if settings.rate_limit_per_minute else None,
                # Decoding a 40 MP photo takes ~150 MB; bound how many run at once.
                "image_limiter": anyio.CapacityLimiter(max(2, os.cpu_count() or 2)),
                "monitor": monitor,
                "edge_shipper": edge_shipper,
            }
            log.info("stopping")

    app = FastAPI(
        title="product-analyzer",
        version=VERSION,
        summary="A product photo in, a structured product report out.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origin_regex=origins_regex(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
            max_age=600,
        )
    # Added last: outermost, sees every response. The EMF block is for CloudWatch, which reads JSON lines only.
    app.add_middleware(
        RequestContextMiddleware, metrics_namespace=settings.metrics_namespace if settings.log_format == "json" else ""
    )
    app.include_router(health.router)
    app.include_router(analyze.router)
    app.include_router(analyses.router)
    app.include_router(edge_logs.router)
    return app


def origins_regex(origins: tuple[str, ...]) -> str:
    """One regex for the allowed origins; `*` in an entry matches a port or subdomain part."""
    parts = [re.escape(origin.rstrip("/")).replace(r"\*", r"[A-Za-z0-9.-]+") for origin in origins]
    return "^(?:" + "|".join(parts) + ")$"


async def build_backends(settings: Settings, stack: AsyncExitStack) -> Backends:
    """Build the outside world's adapters the settings name (store, model, writer); clients close when `stack` does."""
    return Backends(
        store=await _build_store(settings, stack),
        vision=await _build_vision(settings, stack),
        writer=await _build_writer(settings, stack),
    )


async def _build_repository(settings: Settings, stack: AsyncExitStack) -> AnalysisRepository:
    from app.adapters.sql.engine import build_engine, check_schema
    from app.adapters.sql.repository import SqlAnalysisRepository

    engine = build_engine(
        settings.database_url, timeout_s=settings.database_timeout_seconds, pool_size=settings.database_pool_size
    )
    stack.push_async_callback(engine.dispose)
    await check_schema(engine)
    return SqlAnalysisRepository(engine)


async def _build_verifier(settings: Settings, stack: AsyncExitStack) -> TokenVerifier | None:
    if settings.auth_mode == "disabled":
        return None
    if settings.auth_mode == "supabase":
        import httpx

        from app.adapters.auth_supabase import SupabaseVerifier

        http = None
        if settings.supabase_url:
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=httpx.Timeout(5.0)))
        secret = settings.supabase_jwt_secret
        verifier = SupabaseVerifier(
            http=http,
            jwks_url=f"{settings.supabase_url}/auth/v1/.well-known/jwks.json" if settings.supabase_url else None,
            issuer=f"{settings.supabase_url}/auth/v1" if settings.supabase_url else None,
            hs256_secret=secret.get_secret_value().encode() if secret else None,
            algorithms=settings.jwt_algorithms(),
            jwks_ttl_s=settings.supabase_jwks_cache_seconds,
            jwks_refetch_min_s=settings.supabase_jwks_refetch_seconds,
        )
        try:  # warm the key cache; Supabase being down must not stop the service from starting
            await verifier.check()
        except AppError as exc:
            log.warning("jwks_unavailable_at_startup", error=exc.code)
        return verifier
    raise ConfigError(f"Unknown AUTH_MODE={settings.auth_mode!r}; use disabled or supabase.")


async def _build_analytics(settings: Settings, stack: AsyncExitStack) -> Analytics | None:
    """PostHog when POSTHOG_API_KEY is set; none otherwise (no client, no thread, no cost)."""
    if settings.posthog_api_key is None:
        return None
    from app.adapters.analytics_posthog import build_posthog

    analytics = build_posthog(settings)
    stack.push_async_callback(lambda: anyio.to_thread.run_sync(analytics.close))  # flushes; blocks, so off the loop
    return analytics


async def _build_edge_shipper(settings: Settings, stack: AsyncExitStack) -> EdgeLogShipper | None:
    """The shipper behind POST /v1/logs/edge: to EDGE_LOG_GROUP, or to this service's own log without one."""
    if settings.edge_log_token is None:
        return None
    destination: LogDestination
    if settings.edge_log_group:
        from app.adapters.aws import build_logs_client
        from app.adapters.logs_cloudwatch import CloudWatchLogsDestination, default_stream_name

        client = build_logs_client(settings)
        stack.callback(client.close)
        destination = CloudWatchLogsDestination(
            client, group=settings.edge_log_group, stream=settings.edge_log_stream or default_stream_name()
        )
    else:
        from app.adapters.logs_local import LocalLogDestination

        destination = LocalLogDestination()
    shipper = EdgeLogShipper(
        destination, max_queue=settings.edge_log_queue_max, flush_interval_s=settings.edge_log_flush_seconds
    )
    return await stack.enter_async_context(shipper)


async def _build_store(settings: Settings, stack: AsyncExitStack) -> ImageStore:
    if settings.storage_backend == "local":
        from app.adapters.storage_local import LocalImageStore

        return LocalImageStore(settings.storage_dir)
    if settings.storage_backend == "s3":
        from app.adapters.aws import build_s3_client
        from app.adapters.storage_s3 import S3ImageStore

        assert settings.s3_bucket is not None  # check_backends made sure
        client = build_s3_client(settings)
        stack.callback(client.close)
        return S3ImageStore(
            client, bucket=settings.s3_bucket, prefix=settings.s3_prefix, kms_key_id=settings.s3_kms_key_id
        )
    raise ConfigError(f"Unknown STORAGE_BACKEND={settings.storage_backend!r}; use local or s3.")


async def _build_vision(settings: Settings, stack: AsyncExitStack) -> VisionModel:
    if settings.vision_backend == "local":
        from app.adapters.vision_local import LocalVision, load_model
        from model.thread import model_thread

        thread = model_thread()
        stack.callback(thread.shutdown, wait=False)
        loaded = await asyncio.get_running_loop().run_in_executor(thread, load_model, settings)
        log.info("model_loaded", model=loaded.name, device=str(loaded.device), dtype=str(loaded.dtype))
        return LocalVision(loaded, timeout_s=settings.vision_timeout_seconds, thread=thread)
    if settings.vision_backend == "sagemaker":
        import httpx

        from app.adapters.aws import build_sagemaker_client, build_sagemaker_runtime_client
        from app.adapters.vision_sagemaker import EndpointStatusReadiness, PingReadiness, Readiness, SageMakerVision

        runtime = build_sagemaker_runtime_client(settings)
        stack.callback(runtime.close)
        readiness: Readiness
        if settings.sagemaker_runtime_url:  # a local `python -m model.serve`: it answers GET /ping
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=2.0))
            readiness = PingReadiness(settings.sagemaker_runtime_url, http)
        else:
            control = build_sagemaker_client(settings)
            stack.callback(control.close)
            readiness = EndpointStatusReadiness(control, settings.sagemaker_endpoint)
        return SageMakerVision(
            runtime,
            endpoint_name=settings.sagemaker_endpoint,
            readiness=readiness,
            max_attempts=settings.vision_max_attempts,
        )
    raise ConfigError(f"Unknown VISION_BACKEND={settings.vision_backend!r}; use local or sagemaker.")


async def _build_writer(settings: Settings, stack: AsyncExitStack) -> ReportWriter:
    if settings.report_writer == "template":
        from app.adapters.writer_template import TemplateWriter

        return TemplateWriter()
    if settings.report_writer == "openai":
        from app.adapters.writer_openai import OpenAIWriter, build_openai_client

        client = build_openai_client(settings)
        stack.push_async_callback(client.close)
        return OpenAIWriter(client, model=settings.openai_model, reasoning_effort=settings.openai_reasoning_effort)
    raise ConfigError(f"Unknown REPORT_WRITER={settings.report_writer!r}; use template or openai.")
