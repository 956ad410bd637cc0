"""model/code/inference.py on the tiny random-weight BLIP-2: the real code, tiny weights."""

from __future__ import annotations

import base64
import inspect
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from model.baseline import naive_predict
from model.code import inference
from model.code.inference import InvalidInput, LoadedModel, VisionRequest
from tests.model.helpers import PassCounter, jpeg_bytes, json_body, product_photo


def test_model_fn_loads_on_cpu_in_float32(loaded: LoadedModel) -> None:
    assert loaded.device.type == "cpu"
    assert next(loaded.model.parameters()).dtype.is_floating_point
    assert loaded.dtype.itemsize == 4
    assert not loaded.model.training


@pytest.mark.parametrize(
    ("handler", "arities"),
    [("model_fn", {1, 2}), ("input_fn", {2, 3}), ("predict_fn", {2, 3}), ("output_fn", {2, 3})],
)
def test_handlers_take_as_many_parameters_as_the_sagemaker_toolkit_passes(handler: str, arities: set[int]) -> None:
    # sagemaker-inference's Transformer._run_handler_function counts parameters: the toolkit's
    # arguments, or those plus its context; any other count is a TypeError when the endpoint starts.
    parameters = inspect.signature(getattr(inference, handler)).parameters
    assert len(parameters) in arities


def test_model_fn_asks_for_sdpa_attention_in_every_part(loaded: LoadedModel) -> None:
    parts = [loaded.model.vision_model, loaded.model.qformer, loaded.model.language_model]
    assert [part.config._attn_implementation for part in parts] == ["sdpa"] * 3


def test_json_request_round_trip_follows_the_contract(loaded: LoadedModel) -> None:
    questions = ["What brand is it?", "What color is it?"]
    body = json_body(jpeg_bytes(product_photo()), questions, max_new_tokens={"caption": 8, "answer": 4})
    request = inference.input_fn(body, "application/json; charset=utf-8")
    payload, content_type = inference.output_fn(inference.predict_fn(request, loaded), "application/json")

    assert content_type == "application/json"
    response = json.loads(payload)
    assert set(response) == {"model", "caption", "answers", "timings_ms"}
    assert response["model"] == loaded.name
    assert [a["question"] for a in response["answers"]] == questions
    assert response["caption"].strip()
    assert set(response["timings_ms"]) >= {"preprocess", "generate"}
    tokenizer = loaded.processor.tokenizer
    assert len(tokenizer(response["caption"], add_special_tokens=False)["input_ids"]) <= 8
    for answer in response["answers"]:
        assert len(tokenizer(answer["answer"], add_special_tokens=False)["input_ids"]) <= 4


@pytest.mark.parametrize("content_type", ["image/jpeg", "image/png", "application/x-image"])
def test_raw_image_body_gets_caption_and_default_questions(loaded: LoadedModel, content_type: str) -> None:
    buffer = io.BytesIO()
    product_photo().save(buffer, "PNG" if content_type == "image/png" else "JPEG")
    request = inference.input_fn(buffer.getvalue(), content_type)
    assert request.questions == list(inference.DEFAULT_QUESTIONS)
    response = inference.predict_fn(request, loaded)
    assert len(response["answers"]) == len(inference.DEFAULT_QUESTIONS)


def test_vision_tower_runs_once_per_request_whatever_the_question_count(
    loaded: LoadedModel, vision_passes: PassCounter
) -> None:
    request = VisionRequest(image=product_photo(), questions=[f"Question number {i}?" for i in range(8)])
    inference.predict_fn(request, loaded)
    assert vision_passes.passes == 1


def test_a_batch_of_requests_is_one_vision_pass_with_each_answer_its_own(
    loaded: LoadedModel, vision_passes: PassCounter
) -> None:
    first = VisionRequest(image=product_photo((200, 30, 30)), questions=["What brand is it?"])
    second = VisionRequest(
        image=product_photo((20, 30, 220), (300, 400)), questions=["What color is it?", "Is it new?"]
    )
    together = inference.predict_batch([first, second], loaded)
    assert vision_passes.passes == 1
    # Each request's answer is what it gets alone: batching must not mix rows up.
    alone = [inference.predict_fn(first, loaded), inference.predict_fn(second, loaded)]
    assert [(r["caption"], r["answers"]) for r in together] == [(r["caption"], r["answers"]) for r in alone]


@pytest.mark.parametrize("padding_side", ["left", "right"])  # OPT's own tokenizer pads right
def test_encode_once_batched_decoding_says_what_the_naive_loop_says(
    loaded: LoadedModel, vision_passes: PassCounter, padding_side: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loaded.processor.tokenizer, "padding_side", padding_side)
    request = VisionRequest(
        image=product_photo(),
        questions=["What brand is it?", "What color is it?", "What material is it made of?"],
        caption_max_new_tokens=10,
        answer_max_new_tokens=5,
    )
    naive = naive_predict(request, loaded)
    assert vision_passes.passes == 1 + len(request.questions)  # the naive loop re-encodes
    ours = inference.predict_fn(request, loaded)
    assert ours["caption"] == naive["caption"]
    assert ours["answers"] == naive["answers"]


def _png_header_only() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")
    return buffer.getvalue()[:40]


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (json.dumps({"questions": []}).encode(), "application/json", 400),
        (json.dumps({"image": "not base64 !!"}).encode(), "application/json", 400),
        (json.dumps({"image": base64.b64encode(b"plain text").decode()}).encode(), "application/json", 415),
        (json.dumps({"image": base64.b64encode(_png_header_only()).decode()}).encode(), "application/json", 415),
        (b"GIF89a....", "image/jpeg", 415),
        (b"hello", "text/plain", 415),
        (b"", "application/json", 400),
    ],
    ids=["bad-json", "not-object", "no-image", "bad-base64", "not-an-image", "truncated-png", "gif", "text", "empty"],
)
def test_bad_bodies_are_refused_with_a_client_status(body: bytes, content_type: str, status: int) -> None:
    with pytest.raises(InvalidInput) as caught:
        inference.input_fn(body, content_type)
    assert caught.value.status_code == status


@pytest.mark.parametrize(
    "extra",
    [
        {"questions": ["q?"] * (inference.MAX_QUESTIONS + 1)},
        {"questions": ["x" * (inference.MAX_QUESTION_CHARS + 1)]},
        {"questions": ["  "]},
        {"questions": "What brand?"},
        {"max_new_tokens": {"caption": 0}},
        {"max_new_tokens": {"answer": inference.MAX_TOKENS_ANSWER + 1}},
        {"max_new_tokens": {"caption": True}},
        {"max_new_tokens": [30]},
    ],
)
def test_bad_fields_are_refused_with_400(extra: dict[str, object]) -> None:
    payload = {"image": base64.b64encode(jpeg_bytes(product_photo())).decode(), "questions": ["Ok?"], **extra}
    with pytest.raises(InvalidInput) as caught:
        inference.input_fn(json.dumps(payload), "application/json")
    assert caught.value.status_code == 400


def test_output_fn_refuses_other_representations() -> None:
    with pytest.raises(InvalidInput) as caught:
        inference.output_fn({"model": "m", "caption": "", "answers": []}, "text/csv")
    assert caught.value.status_code == 406
    assert inference.output_fn({"caption": "é"}, "*/*") == ('{"caption": "é"}'.encode(), "application/json")


def test_tiny_model_cli_writes_a_loadable_model(tmp_path: Path) -> None:
    from model.tiny import main

    assert main([str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "config.json").is_file()
    assert (tmp_path / "m" / "model.safetensors").is_file()
    assert inference.model_fn(str(tmp_path / "m")).name == "m"


def test_the_models_default_questions_are_the_apps() -> None:
    """Raw-image bodies get the model's list; JSON bodies from the app send the app's. Keep them one list."""
    from app.config import DEFAULT_QUESTIONS

    assert inference.DEFAULT_QUESTIONS == DEFAULT_QUESTIONS
