"""The ports: what the service needs from the outside world, as small async Protocols.

Each has a production adapter and an embedded one under `app/adapters/`; only
`app/bootstrap.py` knows which runs. Adapters raise `app.errors` exceptions, never SDK ones.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

from app.domain.models import ProductReport, StoredAnalysis, User, VisionResult


class ImageStore(Protocol):
    """Where normalized images are kept (a local folder, or S3)."""

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store `data` under `key`, overwriting; raise an `AppError` on failure."""
        ...

    async def delete(self, key: str) -> None:
        """Remove `key`; a key that is not there is not an error."""
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


class DuplicateIdempotencyKey(Exception):
    """`AnalysisRepository.add` found the user's Idempotency-Key already taken."""


class AnalysisRepository(Protocol):
    """Where analyses, their idempotency keys and the daily usage counters are kept (SQLite or PostgreSQL).

    Every query is scoped by `user_id`: one user can never read, find or delete another's analysis.
    """

    async def add(self, analysis: StoredAnalysis) -> None:
        """Insert; raise `DuplicateIdempotencyKey` when the user already holds its idempotency key."""
        ...

    async def save(self, analysis: StoredAnalysis) -> None:
        """Write back the outcome of a running analysis (status, results, error, key, completion time)."""
        ...

    async def get(self, user_id: str, analysis_id: uuid.UUID) -> StoredAnalysis | None: ...

    async def by_idempotency_key(self, user_id: str, key: str) -> StoredAnalysis | None: ...

    async def fresh_result(
        self, user_id: str, image_sha256: str, options_hash: str, *, since: datetime
    ) -> StoredAnalysis | None:
        """The newest analysis the model really ran (not a cached copy) that succeeded after `since`."""
        ...

    async def history(
        self, user_id: str, *, limit: int, after: tuple[datetime, uuid.UUID] | None
    ) -> list[StoredAnalysis]:
        """The user's analyses newest first, starting below the `(created_at, id)` cursor `after`."""
        ...

    async def delete(
        self, user_id: str, analysis_id: uuid.UUID, *, remove_image: Callable[[str], Awaitable[None]]
    ) -> StoredAnalysis | None:
        """Delete the analysis; when no other analysis of the user shares its image, await
        `remove_image(key)` before committing, so a failure leaves both in place. None: no such analysis."""
        ...

    async def take_quota(self, user_id: str, day: date, limit: int) -> bool:
        """Count one analysis against the user's `day`; False (counting nothing) once `limit` is reached."""
        ...

    async def return_quota(self, user_id: str, day: date) -> None:
        """Give back one analysis taken on `day` (it failed upstream)."""
        ...

    async def check(self) -> None:
        """Return when the database answers; raise `NotReady` otherwise."""
        ...


class TokenVerifier(Protocol):
    """Checks an access token and says whose it is (Supabase Auth)."""

    async def verify(self, token: str) -> User:
        """The token's user; raise `Unauthorized` for any token that is not valid."""
        ...

    async def check(self) -> None:
        """Return when tokens can be verified (signing keys loaded); raise `NotReady` otherwise."""
        ...


@dataclass(frozen=True, slots=True)
class LogLine:
    """One log event bound for a log store: when it happened (ms since the epoch, UTC) and its text."""

    timestamp_ms: int
    message: str


class LogDestination(Protocol):
    """Where forwarded log events end up (CloudWatch Logs, or this service's own log)."""

    name: str

    async def put(self, lines: Sequence[LogLine]) -> int:
        """Write one batch, already sorted by time and within the destination's limits; return how many
        lines it rejected (too old, too new). Raise `UpstreamUnavailable` or `UpstreamTimeout` when a
        retry may succeed (throttling, 5xx, timeouts), any other `AppError` when it cannot."""
        ...


class Analytics(Protocol):
    """Product and latency events (PostHog). `capture` only enqueues: it never waits on the network."""

    def capture(self, event: str, *, distinct_id: str, properties: Mapping[str, object]) -> None: ...


@dataclass(frozen=True, slots=True)
class Backends:
    """The adapters one app instance runs on; `app.bootstrap` builds them, tests pass fakes.

    `repository` and `verifier` left None are built from DATABASE_URL and AUTH_MODE, so tests
    that fake the outside world still run on a real database.
    """

    store: ImageStore
    vision: VisionModel
    writer: ReportWriter
    repository: AnalysisRepository | None = None
    verifier: TokenVerifier | None = None
