"""The analysis pipeline: store -> describe -> write, timed stage by stage, and remembered.

Storing the image and describing it do not depend on each other, so they run at once; the
report needs the description, so it follows. The service knows only the ports.

Before any of that, the caller must not pay twice:
- an `Idempotency-Key` seen in the last 24 h answers with the saved response (same request),
  422 (another request) or 409 (the first is still running); a failed analysis frees its key;
- the same user, image and options within `CACHE_TTL_SECONDS` answer with the stored result,
  `cached: true`, without calling the model or the writer;
- otherwise one analysis is taken from the user's `DAILY_QUOTA` (given back if it fails).
Every outcome is one row in the repository: running, then succeeded or failed.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import anyio

from app.domain.models import (
    AnalysisResponse,
    ImageInfo,
    ImageUpload,
    ProductReport,
    StoredAnalysis,
    Timings,
    VisionResult,
)
from app.domain.ports import AnalysisRepository, DuplicateIdempotencyKey, ImageStore, ReportWriter, VisionModel
from app.errors import AppError, IdempotencyKeyInUse, IdempotencyKeyReused, RateLimited
from app.logging import annotate
from app.services.keys import image_key

T = TypeVar("T")

IDEMPOTENCY_TTL = timedelta(hours=24)
# A row still "running" after this long belongs to a process that died; its key is freed.
# Far above the worst case of a live request (upload + 2 x 20 s upstream timeouts).
ABANDONED_AFTER = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class VisionOptions:
    """What every request asks the vision model, before the client's own questions."""

    questions: tuple[str, ...]
    caption_max_new_tokens: int = 30
    answer_max_new_tokens: int = 10


@dataclass(frozen=True, slots=True)
class Limits:
    """CACHE_TTL_SECONDS and DAILY_QUOTA; 0 turns either off."""

    cache_ttl_s: int = 0
    daily_quota: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    response: AnalysisResponse
    replayed: bool = False  # the saved response of an earlier request with the same Idempotency-Key


async def _timed(call: Callable[[], Awaitable[T]]) -> tuple[T, float]:
    started = time.perf_counter()
    result = await call()
    return result, (time.perf_counter() - started) * 1000


def seconds_to_midnight(now: datetime) -> int:
    """Seconds until the next UTC day, when a spent daily quota refills."""
    utc = now.astimezone(UTC)
    midnight = (utc + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return math.ceil((midnight - utc).total_seconds())


class AnalysisService:
    """Runs one analysis through the ports and returns the response of DESIGN.md."""

    def __init__(
        self,
        *,
        store: ImageStore,
        vision: VisionModel,
        writer: ReportWriter,
        repository: AnalysisRepository,
        options: VisionOptions,
        limits: Limits = Limits(),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.vision = vision
        self.writer = writer
        self.repository = repository
        self.options = options
        self.limits = limits
        self.clock = clock

    async def analyze(self, upload: ImageUpload, *, user_id: str, idempotency_key: str | None = None) -> Outcome:
        """Answer from an earlier request when that is the same work, else run the pipeline and save it."""
        started = time.perf_counter()
        now = self.clock()
        draft = StoredAnalysis(
            id=uuid.uuid4(),
            user_id=user_id,
            status="running",
            created_at=now,
            image=_image_info(upload, image_key(user_id, upload.image.sha256, now)),
            options=upload.options,
            options_hash=upload.options.digest(),
            idempotency_key=idempotency_key,
        )
        if idempotency_key is not None:
            earlier = await self.repository.by_idempotency_key(user_id, idempotency_key)
            if earlier is not None and (replay := await self._replay(earlier, draft)) is not None:
                return replay

        if self.limits.cache_ttl_s:
            since = now - timedelta(seconds=self.limits.cache_ttl_s)
            fresh = await self.repository.fresh_result(user_id, draft.image.sha256, draft.options_hash, since=since)
            if fresh is not None:
                return await self._serve_cached(fresh, draft, upload, started)

        if self.limits.daily_quota and not await self.repository.take_quota(
            user_id, now.astimezone(UTC).date(), self.limits.daily_quota
        ):
            raise RateLimited(
                seconds_to_midnight(now),
                f"The daily quota of {self.limits.daily_quota} analyses is used up; it refills at midnight UTC.",
            )
        try:
            if (replay := await self._add(draft)) is not None:
                await self._return_quota(draft)
                return replay
            response = await self._run(draft, upload, started)
        except BaseException:
            with anyio.CancelScope(shield=True):  # a client that hung up still gets its quota back
                await self._return_quota(draft)
            raise
        return Outcome(response)

    async def _replay(self, earlier: StoredAnalysis, draft: StoredAnalysis) -> Outcome | None:
        """What an earlier request with the same key means for this one; None: the key is free to use again."""
        expired = earlier.created_at < draft.created_at - IDEMPOTENCY_TTL
        abandoned = earlier.status == "running" and earlier.created_at < draft.created_at - ABANDONED_AFTER
        if expired or abandoned or earlier.status == "failed":
            outcome = replace(earlier, idempotency_key=None)
            if abandoned:
                outcome = replace(
                    outcome, status="failed", error_code="abandoned", error_detail="The analysis never finished."
                )
            await self.repository.save(outcome)
            return None
        if (earlier.image.sha256, earlier.options_hash) != (draft.image.sha256, draft.options_hash):
            raise IdempotencyKeyReused()
        if earlier.status == "running":
            raise IdempotencyKeyInUse()
        annotate(analysis_id=earlier.id.hex, replayed=True)
        return Outcome(earlier.to_response(), replayed=True)

    async def _add(self, analysis: StoredAnalysis) -> Outcome | None:
        """Insert `analysis`; when a concurrent request took its key first, answer as that one says."""
        try:
            await self.repository.add(analysis)
        except DuplicateIdempotencyKey:
            assert analysis.idempotency_key is not None
            earlier = await self.repository.by_idempotency_key(analysis.user_id, analysis.idempotency_key)
            if earlier is None or (replay := await self._replay(earlier, analysis)) is None:
                raise IdempotencyKeyInUse() from None  # freed in between: the client's retry will run
            return replay
        return None

    async def _serve_cached(
        self, fresh: StoredAnalysis, draft: StoredAnalysis, upload: ImageUpload, started: float
    ) -> Outcome:
        """Save and return a copy of `fresh`: the model and the writer are not called."""
        total = upload.upload_ms + (time.perf_counter() - started) * 1000
        timings = Timings(upload=round(upload.upload_ms, 1), total=round(total, 1))
        copy = replace(
            draft,
            status="succeeded",
            cached=True,
            source_id=fresh.id,
            image=fresh.image,  # the image is already stored, under the key of the first analysis
            vision=fresh.vision,
            report=fresh.report,
            timings=timings,
            completed_at=self.clock(),
        )
        if (replay := await self._add(copy)) is not None:
            return replay
        annotate(analysis_id=copy.id.hex, cached=True, cached_from=fresh.id.hex, timings_ms=timings.model_dump())
        return Outcome(copy.to_response())

    async def _return_quota(self, analysis: StoredAnalysis) -> None:
        if self.limits.daily_quota:
            await self.repository.return_quota(analysis.user_id, analysis.created_at.astimezone(UTC).date())

    async def _run(self, analysis: StoredAnalysis, upload: ImageUpload, started: float) -> AnalysisResponse:
        """Store the normalized image, describe it, write the report; save the outcome either way."""
        try:
            vision, report, timings = await self._pipeline(analysis, upload, started)
        except BaseException as exc:
            if isinstance(exc, AppError):
                code, detail = exc.code, exc.detail
            elif isinstance(exc, anyio.get_cancelled_exc_class()):
                code, detail = "cancelled", "The request ended before the analysis finished."
            else:
                code, detail = AppError.code, AppError.detail
            failed = replace(
                analysis,
                status="failed",
                idempotency_key=None,  # a retry with the same key runs again
                error_code=code,
                error_detail=detail,
                completed_at=self.clock(),
            )
            with anyio.CancelScope(shield=True):
                await self.repository.save(failed)
            raise
        done = replace(
            analysis, status="succeeded", vision=vision, report=report, timings=timings, completed_at=self.clock()
        )
        await self.repository.save(done)
        annotate(analysis_id=analysis.id.hex, cached=False)
        return done.to_response()

    async def _pipeline(
        self, analysis: StoredAnalysis, upload: ImageUpload, started: float
    ) -> tuple[VisionResult, ProductReport, Timings]:
        image = upload.image
        questions = (*self.options.questions, *upload.options.questions)

        async def store() -> None:
            await self.store.put(analysis.image.storage_key, image.stored, image.content_type)

        async def describe() -> VisionResult:
            return await self.vision.describe(
                image.for_model,
                questions,
                caption_max_new_tokens=self.options.caption_max_new_tokens,
                answer_max_new_tokens=self.options.answer_max_new_tokens,
            )

        (_, store_ms), (vision, vision_ms) = await _concurrently(lambda: _timed(store), lambda: _timed(describe))

        async def write() -> ProductReport:
            return await self.writer.write(vision, locale=upload.options.locale, hints=upload.options.hints)

        report, report_ms = await _timed(write)
        timings = Timings(
            upload=round(upload.upload_ms, 1),
            store=round(store_ms, 1),
            vision=round(vision_ms, 1),
            report=round(report_ms, 1),
            total=round(upload.upload_ms + (time.perf_counter() - started) * 1000, 1),
        )
        annotate(
            timings_ms=timings.model_dump(),
            image_bytes=len(image.stored),
            model_bytes=len(image.for_model),
            received_bytes=upload.received_bytes,
            model=vision.model,
            writer=report.writer,
            questions=len(questions),
        )
        return vision, report, timings


def _image_info(upload: ImageUpload, key: str) -> ImageInfo:
    image = upload.image
    return ImageInfo(
        sha256=image.sha256,
        content_type=image.content_type,
        width=image.width,
        height=image.height,
        bytes=len(image.stored),
        storage_key=key,
    )


A = TypeVar("A")
B = TypeVar("B")


async def _concurrently(first: Callable[[], Awaitable[A]], second: Callable[[], Awaitable[B]]) -> tuple[A, B]:
    """Run two calls at once; if one fails, cancel the other and raise the failure itself.

    anyio wraps task failures in an ExceptionGroup; callers want the `AppError` inside, so
    the first one is re-raised as it was (with its own cause chain).
    """
    first_result: list[A] = []
    second_result: list[B] = []

    async def run_first() -> None:
        first_result.append(await first())

    async def run_second() -> None:
        second_result.append(await second())

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(run_first)
            group.start_soon(run_second)
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from failures.exceptions[0].__cause__
    return first_result[0], second_result[0]
