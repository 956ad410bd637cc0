"""The analysis pipeline: store -> describe -> write, timed stage by stage.

Storing the image and describing it do not depend on each other, so they run at once; the
report needs the description, so it follows. The service knows only the ports.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import anyio

from app.domain.models import (
    AnalysisResponse,
    ImageInfo,
    ImageUpload,
    ProductReport,
    Timings,
    VisionResult,
)
from app.domain.ports import ImageStore, ReportWriter, VisionModel
from app.logging import annotate
from app.services.keys import image_key

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class VisionOptions:
    """What every request asks the vision model, before the client's own questions."""

    questions: tuple[str, ...]
    caption_max_new_tokens: int = 30
    answer_max_new_tokens: int = 10


async def _timed(call: Callable[[], Awaitable[T]]) -> tuple[T, float]:
    started = time.perf_counter()
    result = await call()
    return result, (time.perf_counter() - started) * 1000


class AnalysisService:
    """Runs one analysis through the ports and returns the response of DESIGN.md."""

    def __init__(
        self,
        *,
        store: ImageStore,
        vision: VisionModel,
        writer: ReportWriter,
        options: VisionOptions,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.vision = vision
        self.writer = writer
        self.options = options
        self.clock = clock

    async def analyze(self, upload: ImageUpload, *, user_id: str) -> AnalysisResponse:
        """Store the normalized image, describe it, write the report."""
        started = time.perf_counter()
        now = self.clock()
        image = upload.image
        key = image_key(user_id, image.sha256, now)
        questions = (*self.options.questions, *upload.options.questions)

        async def store() -> None:
            await self.store.put(key, image.stored, image.content_type)

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
        return AnalysisResponse(
            id=uuid.uuid4().hex,
            created_at=now,
            image=ImageInfo(
                sha256=image.sha256,
                content_type=image.content_type,
                width=image.width,
                height=image.height,
                bytes=len(image.stored),
                storage_key=key,
            ),
            vision=vision,
            report=report,
            timings_ms=timings,
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
