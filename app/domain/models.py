"""Request, response and report models: the HTTP and vision contracts of DESIGN.md as types.

Field names are the contract with app clients; add fields, never rename them.
This module imports nothing of ours.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "1"

DEFAULT_LOCALE: Final = "en"
LOCALE_PATTERN: Final = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,3}")  # BCP 47-ish: en, fr-CA, pt_BR
REPORT_MAX_TITLE_CHARS: Final = 80
REPORT_MAX_TAGS: Final = 10

Condition = Literal["new", "used", "refurbished", "unknown"]
AnalysisStatus = Literal["running", "succeeded", "failed"]


@dataclass(frozen=True, slots=True)
class User:
    """Who is calling: Supabase's user id (the token's `sub`), or the local user when auth is off."""

    id: str


@dataclass(frozen=True, slots=True)
class NormalizedImage:
    """An upload after normalization: oriented, RGB, metadata-free JPEGs for storage and the model."""

    stored: bytes  # JPEG, long side <= STORE_MAX_SIDE; what is stored and hashed
    for_model: bytes  # JPEG, long side <= MODEL_IMAGE_SIDE; what the vision model receives
    sha256: str  # hex digest of `stored`
    width: int  # of `stored`
    height: int
    source_format: str  # "jpeg", "png", "webp" or "heif", from the bytes, never the declared type
    source_width: int
    source_height: int
    content_type: str = "image/jpeg"  # of `stored`


@dataclass(frozen=True, slots=True)
class AnalysisOptions:
    """What the client asked for besides the image."""

    questions: tuple[str, ...] = ()
    locale: str = DEFAULT_LOCALE
    hints: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"questions": list(self.questions), "locale": self.locale, "hints": self.hints}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> AnalysisOptions:
        questions = data.get("questions") or []
        assert isinstance(questions, list)
        hints = data.get("hints")
        return cls(
            questions=tuple(str(q) for q in questions),
            locale=str(data.get("locale") or DEFAULT_LOCALE),
            hints=str(hints) if hints is not None else None,
        )

    def digest(self) -> str:
        """SHA-256 of the options in canonical JSON: equal options, equal digests."""
        canonical = json.dumps(self.to_json(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ImageUpload:
    """The `/analyze` form, validated and normalized by the upload dependency."""

    image: NormalizedImage
    options: AnalysisOptions
    received_bytes: int
    upload_ms: float


class QA(BaseModel):
    question: str
    answer: str


class VisionResult(BaseModel):
    """What the vision model saw: the `vision` block of the response."""

    model: str
    caption: str
    answers: list[QA] = Field(default_factory=list)


class ProductReport(BaseModel):
    """The structured product report: the `report` block of the response."""

    model_config = ConfigDict(extra="forbid")

    title: str
    brand: str | None = None
    category: str
    attributes: dict[str, str] = Field(default_factory=dict)
    condition: Condition = "unknown"
    description: str
    tags: list[str] = Field(default_factory=list)
    writer: str


class ImageInfo(BaseModel):
    sha256: str
    content_type: str
    width: int
    height: int
    bytes: int
    storage_key: str


class Timings(BaseModel):
    """Milliseconds per stage; `store` and `vision` overlap, so they may add up to more than `total`."""

    upload: float = 0.0
    store: float = 0.0
    vision: float = 0.0
    report: float = 0.0
    total: float = 0.0


class AnalysisResponse(BaseModel):
    """The `200` body of `POST /analyze`."""

    id: str
    status: Literal["succeeded"] = "succeeded"
    schema_version: str = SCHEMA_VERSION
    created_at: datetime
    cached: bool = False
    image: ImageInfo
    vision: VisionResult
    report: ProductReport
    timings_ms: Timings


class AnalysisError(BaseModel):
    code: str
    detail: str


class Analysis(BaseModel):
    """One analysis as `GET /analyses/{id}` returns it; a succeeded one has the fields of `AnalysisResponse`."""

    id: str
    status: AnalysisStatus
    schema_version: str = SCHEMA_VERSION
    created_at: datetime
    completed_at: datetime | None = None
    cached: bool = False
    image: ImageInfo
    vision: VisionResult | None = None
    report: ProductReport | None = None
    timings_ms: Timings | None = None
    error: AnalysisError | None = None


class AnalysisPage(BaseModel):
    """`GET /analyses`: the caller's analyses, newest first; pass `next_cursor` as `cursor` for more."""

    items: list[Analysis]
    next_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class StoredAnalysis:
    """An analysis as the repository keeps it: the response's parts plus what only the service sees."""

    id: uuid.UUID
    user_id: str
    status: AnalysisStatus
    created_at: datetime
    image: ImageInfo
    options: AnalysisOptions
    options_hash: str
    idempotency_key: str | None = None
    cached: bool = False
    source_id: uuid.UUID | None = None
    vision: VisionResult | None = None
    report: ProductReport | None = None
    timings: Timings | None = None
    error_code: str | None = None
    error_detail: str | None = None
    completed_at: datetime | None = None

    def to_analysis(self) -> Analysis:
        error = None
        if self.error_code is not None:
            error = AnalysisError(code=self.error_code, detail=self.error_detail or "")
        return Analysis(
            id=self.id.hex,
            status=self.status,
            created_at=self.created_at,
            completed_at=self.completed_at,
            cached=self.cached,
            image=self.image,
            vision=self.vision,
            report=self.report,
            timings_ms=self.timings,
            error=error,
        )

    def to_response(self) -> AnalysisResponse:
        """The `POST /analyze` body of a succeeded analysis."""
        if self.status != "succeeded" or self.vision is None or self.report is None or self.timings is None:
            raise ValueError(f"analysis {self.id} has not succeeded")
        return AnalysisResponse(
            id=self.id.hex,
            created_at=self.created_at,
            cached=self.cached,
            image=self.image,
            vision=self.vision,
            report=self.report,
            timings_ms=self.timings,
        )


class ErrorBody(BaseModel):
    """Every error response: a stable code, a safe sentence, and the request id."""

    error: str
    detail: str
    request_id: str


class EdgeLogsAccepted(BaseModel):
    """The `202` body of `POST /v1/logs/edge`: queued for CloudWatch, and how many older ones made room."""

    accepted: int
    dropped: int = Field(description="Events dropped from the full queue (the oldest) to take these.")
