"""The app's side of the vision contract: one request body, one response check, for both adapters."""

from __future__ import annotations

import base64
import json

import pytest

from app.domain.vision_contract import MalformedVisionResponse, parse_response, request_body


def test_request_body_follows_the_contract() -> None:
    body = json.loads(request_body(b"\xff\xd8jpeg", ["A?", "B?"], caption_max_new_tokens=30, answer_max_new_tokens=10))
    assert body == {
        "image": base64.b64encode(b"\xff\xd8jpeg").decode(),
        "questions": ["A?", "B?"],
        "max_new_tokens": {"caption": 30, "answer": 10},
    }


def test_a_response_answering_each_question_in_order_is_accepted() -> None:
    payload = json.dumps(
        {
            "caption": "a mug",
            "answers": [{"question": "A?", "answer": "x"}, {"question": "B?", "answer": "y"}],
            "timings_ms": {"generate": 1.0},
        }
    ).encode()
    result = parse_response(payload, ["A?", "B?"], default_model="endpoint")
    assert result.model == "endpoint"
    assert [qa.answer for qa in result.answers] == ["x", "y"]


@pytest.mark.parametrize(
    "payload",
    [
        {"caption": "a mug", "answers": [{"question": "B?", "answer": "y"}, {"question": "A?", "answer": "x"}]},
        {"caption": "a mug", "answers": [{"question": "A?", "answer": "x"}]},
        {"answers": []},
        {"caption": "a mug", "answers": "x"},
    ],
    ids=["reordered", "missing-answer", "no-caption", "answers-not-a-list"],
)
def test_a_response_that_does_not_answer_what_was_asked_is_refused(payload: dict[str, object]) -> None:
    with pytest.raises(MalformedVisionResponse):
        parse_response(json.dumps(payload).encode(), ["A?", "B?"], default_model="endpoint")


def test_a_body_that_is_not_json_is_refused() -> None:
    with pytest.raises(MalformedVisionResponse):
        parse_response(b"<html>502 Bad Gateway</html>", ["A?"], default_model="endpoint")
