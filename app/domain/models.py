"""Request, response and report models: the HTTP and vision contracts of DESIGN.md as types.

Field names are the contract with app clients; add fields, never rename them.
This module imports nothing of ours.
"""

from __future__ import annotations

import re
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


class ErrorBody(BaseModel):
    """Every error response: a stable code, a safe sentence, and the request id."""

    error: str
    detail: str
    request_id: str
