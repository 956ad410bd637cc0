"""The vision contract of DESIGN.md on the app's side: the request body both vision adapters
send (the in-process model reads the very same bytes as the SageMaker endpoint), and the
check that a response answers every question that was asked."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, ValidationError

from app.domain.models import QA, VisionResult


class MalformedVisionResponse(ValueError):
    """The model's answer does not follow the vision contract."""


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore")  # timings_ms, and whatever a later model adds

    model: str | None = None
    caption: str
    answers: list[QA]


def request_body(
    image_jpeg: bytes, questions: Sequence[str], *, caption_max_new_tokens: int, answer_max_new_tokens: int
) -> bytes:
    """Encode the JSON request: the image in base64, the questions in order, the token budgets."""
    return json.dumps(
        {
            "image": base64.b64encode(image_jpeg).decode("ascii"),
            "questions": list(questions),
            "max_new_tokens": {"caption": caption_max_new_tokens, "answer": answer_max_new_tokens},
        }
    ).encode()


def parse_response(payload: bytes, questions: Sequence[str], *, default_model: str) -> VisionResult:
    """Decode the JSON response; raise `MalformedVisionResponse` unless it answers each question in order."""
    try:
        parsed = _Response.model_validate_json(payload)
    except ValidationError as exc:
        raise MalformedVisionResponse("not a vision-contract response") from exc
    if [qa.question for qa in parsed.answers] != list(questions):
        raise MalformedVisionResponse("the answers do not match the questions asked")
    return VisionResult(model=parsed.model or default_model, caption=parsed.caption, answers=parsed.answers)
