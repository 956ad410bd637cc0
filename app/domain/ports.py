"""The ports: what the service needs from the outside world, as small async Protocols.

Each has a production adapter and an embedded one under `app/adapters/`; only
`app/bootstrap.py` knows which runs. Adapters raise `app.errors` exceptions, never SDK ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from app.domain.models import ProductReport, VisionResult


class ImageStore(Protocol):
    """Where normalized images are kept (a local folder, or S3)."""

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store `data` under `key`, overwriting; raise an `AppError` on failure."""
        ...

    async def check(self) -> None:
        """Return when the store is usable; raise `NotReady` otherwise."""
        ...


class VisionModel(Protocol):
    """BLIP-2: a caption and short answers about one image."""

    name: str

    async def describe(
        self,
        image_jpeg: bytes,
        questions: Sequence[str],
        *,
        caption_max_new_tokens: int,
        answer_max_new_tokens: int,
    ) -> VisionResult:
        """Caption the image and answer each question, in order."""
        ...

    async def check(self) -> None:
        """Return when the model can serve; raise `NotReady` otherwise."""
        ...


class ReportWriter(Protocol):
    """Turns what the vision model saw into a structured product report."""

    name: str

    async def write(self, vision: VisionResult, *, locale: str, hints: str | None) -> ProductReport:
        """Write the report; `hints` are the seller's untrusted notes."""
        ...


@dataclass(frozen=True, slots=True)
class Backends:
    """The adapters one app instance runs on; `app.bootstrap` builds them, tests pass fakes."""

    store: ImageStore
    vision: VisionModel
    writer: ReportWriter
