"""The in-process vision adapter over the tiny BLIP-2: the same four functions SageMaker calls."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from app.adapters.vision_local import LocalVision, load_model
from app.config import ConfigError, Settings
from app.errors import UpstreamTimeout, VisionModelError
from model.code import inference


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path) -> inference.LoadedModel:
    return load_model(Settings(_env_file=None, model_dir=tiny_model_dir))  # type: ignore[call-arg]


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), (10, 120, 40)).save(buffer, "JPEG")
    return buffer.getvalue()


async def test_describe_answers_each_question_in_order(loaded: inference.LoadedModel) -> None:
    vision = LocalVision(loaded, timeout_s=30)
    questions = ["What brand is it?", "What color is it?", "Is it new?"]
    result = await vision.describe(jpeg(), questions, caption_max_new_tokens=6, answer_max_new_tokens=3)
    assert result.model == loaded.name == vision.name
    assert [qa.question for qa in result.answers] == questions
    assert result.caption


async def test_a_body_the_model_refuses_is_a_vision_model_error(loaded: inference.LoadedModel) -> None:
    vision = LocalVision(loaded, timeout_s=30)
    with pytest.raises(VisionModelError):
        await vision.describe(b"not an image", ["Ok?"], caption_max_new_tokens=4, answer_max_new_tokens=2)


async def test_a_slow_model_is_an_upstream_timeout(
    loaded: inference.LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    vision = LocalVision(loaded, timeout_s=0.05)
    real_predict = inference.predict_fn

    def slow_predict(request: inference.VisionRequest, model: inference.LoadedModel) -> dict[str, object]:
        time.sleep(0.3)
        return real_predict(request, model)

    monkeypatch.setattr(inference, "predict_fn", slow_predict)
    started = time.perf_counter()
    with pytest.raises(UpstreamTimeout):
        await vision.describe(jpeg(), ["Ok?"], caption_max_new_tokens=4, answer_max_new_tokens=2)
    assert time.perf_counter() - started < 0.25  # answered at the deadline, not when the thread finished


async def test_an_abandoned_model_call_still_holds_the_model(
    loaded: inference.LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a timeout the next request must wait for the abandoned call: never two at once."""
    vision = LocalVision(loaded, timeout_s=0.05)
    running, peak = 0, 0
    real_predict = inference.predict_fn

    def counting_predict(request: inference.VisionRequest, model: inference.LoadedModel) -> dict[str, object]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        time.sleep(0.3)
        running -= 1
        return real_predict(request, model)

    monkeypatch.setattr(inference, "predict_fn", counting_predict)
    with pytest.raises(UpstreamTimeout):
        await vision.describe(jpeg(), ["Ok?"], caption_max_new_tokens=4, answer_max_new_tokens=2)
    vision.timeout_s = 5.0
    result = await vision.describe(jpeg(), ["Ok?"], caption_max_new_tokens=4, answer_max_new_tokens=2)
    assert result.answers
    assert peak == 1


def test_model_dir_without_a_model_is_refused_before_startup(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"MODEL_DIR=.*make tiny-model"):
        Settings(_env_file=None, model_dir=tmp_path).check_backends()  # type: ignore[call-arg]


def test_unreachable_hub_model_says_to_set_model_dir() -> None:
    # HF_HUB_OFFLINE=1 (set for every test) makes the hub unreachable, as on this machine.
    settings = Settings(_env_file=None, model_id="Salesforce/blip2-opt-2.7b")  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="set MODEL_DIR"):
        load_model(settings)


async def test_every_model_call_runs_on_the_one_model_thread(
    loaded: inference.LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch slows down once two threads have used it (model.thread): calls never hop threads."""
    threads: list[int] = []
    real_predict = inference.predict_fn

    def recording_predict(request: inference.VisionRequest, model: inference.LoadedModel) -> dict[str, object]:
        threads.append(threading.get_ident())
        return real_predict(request, model)

    monkeypatch.setattr(inference, "predict_fn", recording_predict)
    vision = LocalVision(loaded, timeout_s=30)
    for _ in range(3):
        await vision.describe(jpeg(), ["Ok?"], caption_max_new_tokens=2, answer_max_new_tokens=2)
    assert len(threads) == 3
    assert len(set(threads)) == 1
    assert threading.get_ident() not in threads  # and never the event loop's
