"""Fakes of our own ports: they record calls and can be told to fail."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio

from app.domain.models import QA, ProductReport, VisionResult
from app.errors import AppError


@dataclass
class FakeStore:
    objects: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    fail_with: AppError | None = None
    ready: bool = True

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.objects[key] = (data, content_type)

    async def delete(self, key: str) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.objects.pop(key, None)

    async def check(self) -> None:
        if not self.ready:
            from app.errors import NotReady

            raise NotReady("fake store not ready")


@dataclass
class FakeVision:
    name: str = "fake-blip2"
    calls: list[tuple[bytes, tuple[str, ...]]] = field(default_factory=list)
    fail_with: AppError | None = None
    delay_s: float = 0.0
    ready: bool = True

    async def describe(
        self,
        image_jpeg: bytes,
        questions: Sequence[str],
        *,
        caption_max_new_tokens: int,
        answer_max_new_tokens: int,
    ) -> VisionResult:
        self.calls.append((image_jpeg, tuple(questions)))
        if self.delay_s:
            await anyio.sleep(self.delay_s)
        if self.fail_with is not None:
            raise self.fail_with
        answers = [QA(question=q, answer=f"answer {i}") for i, q in enumerate(questions)]
        return VisionResult(model=self.name, caption="a red leather handbag on a table", answers=answers)

    async def check(self) -> None:
        if not self.ready:
            from app.errors import NotReady

            raise NotReady("fake vision not ready")


@dataclass
class FakeWriter:
    name: str = "fake-writer"
    calls: list[tuple[VisionResult, str, str | None]] = field(default_factory=list)
    fail_with: AppError | None = None

    async def write(self, vision: VisionResult, *, locale: str, hints: str | None) -> ProductReport:
        self.calls.append((vision, locale, hints))
        if self.fail_with is not None:
            raise self.fail_with
        return ProductReport(
            title="Red leather handbag",
            category="bags",
            attributes={"color": "red"},
            description=vision.caption,
            tags=["bag", "red"],
            writer=self.name,
        )
