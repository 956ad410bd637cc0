"""python -m model.serve on the tiny BLIP-2, over real HTTP: the container contract, the Runtime
API through boto3, bad bodies, dynamic batching, and the app end to end through boto3."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from botocore.exceptions import ClientError

from app.adapters.aws import build_sagemaker_runtime_client
from app.bootstrap import create_app as create_service
from app.config import Settings
from model.code import inference
from model.code.inference import LoadedModel
from model.serve import ModelServer, create_app
from tests.imagegen import product_jpeg
from tests.loopback import free_port, serving
from tests.model.helpers import PassCounter, jpeg_bytes, json_body, product_photo

if TYPE_CHECKING:
    from mypy_boto3_sagemaker_runtime import SageMakerRuntimeClient

ENDPOINT = "blip2-endpoint"


def runtime_client(base_url: str) -> SageMakerRuntimeClient:
    """boto3's SageMaker Runtime client pointed at a local server, built as the app builds it."""
    settings = Settings(_env_file=None, sagemaker_runtime_url=base_url, vision_timeout_seconds=30)  # type: ignore[call-arg]
    return build_sagemaker_runtime_client(settings)


@pytest.fixture
def server_url(loaded: LoadedModel) -> Iterator[str]:
    with serving(create_app(ModelServer(lambda: loaded, max_batch_size=8, max_wait_ms=5))) as url:
        wait_until_ready(url)
        yield url


def wait_until_ready(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url}/ping did not answer 200 in {timeout_s} s")


def post_all(url: str, bodies: list[str] | list[bytes], content_type: str) -> list[httpx.Response]:
    """POST every body to /invocations at once, over one client; return the answers in order."""

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            headers = {"Content-Type": content_type}
            return await asyncio.gather(*(http.post("/invocations", content=b, headers=headers) for b in bodies))

    return asyncio.run(fire())


def photo(seed: int) -> bytes:
    return jpeg_bytes(product_photo(color=(40 * seed % 256, 90, 200 - 30 * seed % 200)))


# --- the container contract ---------------------------------------------------------------


def test_ping_is_503_while_loading_and_200_once_loaded(loaded: LoadedModel) -> None:
    release = threading.Event()

    def slow_load() -> LoadedModel:
        release.wait(timeout=10)
        return loaded

    with serving(create_app(ModelServer(slow_load))) as url:
        loading = httpx.get(f"{url}/ping")
        assert loading.status_code == 503
        assert loading.json() == {"status": "loading"}
        early = httpx.post(f"{url}/invocations", content=photo(1), headers={"Content-Type": "image/jpeg"})
        assert early.status_code == 503
        assert "not loaded" in early.json()["error"]
        with pytest.raises(ClientError) as caught:
            runtime_client(url).invoke_endpoint(EndpointName=ENDPOINT, ContentType="image/jpeg", Body=photo(1))
        assert caught.value.response["Error"]["Code"] == "ModelNotReadyException"
        release.set()
        wait_until_ready(url, timeout_s=10)
        assert httpx.get(f"{url}/ping").json() == {"status": "ok", "model": loaded.name}


def test_a_model_that_fails_to_load_says_so_and_tells_the_owner() -> None:
    failures: list[BaseException] = []

    def broken() -> LoadedModel:
        raise OSError("no config.json in /nowhere")

    with serving(create_app(ModelServer(broken, on_load_failure=failures.append))) as url:
        deadline = time.monotonic() + 5
        while not failures and time.monotonic() < deadline:
            time.sleep(0.02)
        ping = httpx.get(f"{url}/ping")
    assert ping.status_code == 503
    assert ping.json() == {"status": "failed"}
    assert [str(f) for f in failures] == ["no config.json in /nowhere"]


def test_invocations_follow_the_vision_contract(server_url: str, loaded: LoadedModel) -> None:
    questions = ["What brand is it?", "Is it waterproof?"]
    body = json_body(photo(1), questions, max_new_tokens={"caption": 12, "answer": 4})
    response = httpx.post(f"{server_url}/invocations", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    payload = response.json()
    assert payload["model"] == loaded.name
    assert payload["caption"]
    assert [a["question"] for a in payload["answers"]] == questions
    assert all(len(a["answer"].split()) <= 4 for a in payload["answers"])
    alone = inference.predict_fn(inference.input_fn(body, "application/json"), loaded)
    assert (payload["caption"], payload["answers"]) == (alone["caption"], alone["answers"])


def test_a_raw_image_body_gets_the_default_questions(server_url: str) -> None:
    response = httpx.post(f"{server_url}/invocations", content=photo(2), headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 200, response.text
    assert [a["question"] for a in response.json()["answers"]] == list(inference.DEFAULT_QUESTIONS)


BAD_BODIES = [
    pytest.param(json.dumps({"image": "not base64!!"}), "application/json", 400, "base64", id="invalid-base64"),
    pytest.param(
        json.dumps({"image": base64.b64encode(b"GIF89a not really").decode()}),
        "application/json",
        415,
        "JPEG or PNG",
        id="not-an-image",
    ),
    pytest.param(b"\xff\xd8\xff\xe0 truncated", "image/jpeg", 415, "JPEG or PNG", id="raw-non-image"),
    pytest.param(b"a,b\n1,2\n", "text/csv", 415, "content type", id="unknown-content-type"),
    pytest.param(b"", "", 415, "content type", id="no-content-type"),
    pytest.param(b"{not json", "application/json", 400, "JSON", id="malformed-json"),
    pytest.param(
        json_body(b"x", ["q?"] * (inference.MAX_QUESTIONS + 1)), "application/json", 400, "at most", id="17-questions"
    ),
    pytest.param(
        json_body(b"x", ["q?"], max_new_tokens={"caption": 10_000}),
        "application/json",
        400,
        "max_new_tokens",
        id="huge-budget",
    ),
]


@pytest.mark.parametrize(("body", "content_type", "status", "says"), BAD_BODIES)
def test_bad_bodies_get_a_4xx_json_error(
    server_url: str, body: bytes | str, content_type: str, status: int, says: str
) -> None:
    response = httpx.post(f"{server_url}/invocations", content=body, headers={"Content-Type": content_type})
    assert response.status_code == status
    assert says in response.json()["error"]


def test_unacceptable_accept_is_406_before_the_model_runs(server_url: str, vision_passes: PassCounter) -> None:
    response = httpx.post(
        f"{server_url}/invocations", content=photo(1), headers={"Content-Type": "image/jpeg", "Accept": "text/csv"}
    )
    assert response.status_code == 406
    assert vision_passes.passes == 0


def test_an_oversized_body_is_413_without_being_read(server_url: str) -> None:
    import model.serve

    too_big = model.serve.MAX_BODY_BYTES + 1
    response = httpx.post(
        f"{server_url}/invocations",
        content=iter([b"x" * 1024] * (too_big // 1024 + 1)),
        headers={"Content-Type": "image/jpeg"},
    )
    assert response.status_code == 413
    assert "bytes" in response.json()["error"]


# --- the Runtime API, through boto3 -------------------------------------------------------


def test_boto3_invoke_endpoint_reaches_the_model(server_url: str, loaded: LoadedModel) -> None:
    body = json_body(photo(3), ["What color is it?"])
    response = runtime_client(server_url).invoke_endpoint(
        EndpointName=ENDPOINT, ContentType="application/json", Accept="application/json", Body=body
    )
    assert response["ContentType"] == "application/json"
    assert response["InvokedProductionVariant"] == "AllTraffic"
    payload = json.loads(response["Body"].read())
    assert payload["model"] == loaded.name
    assert payload["answers"][0]["question"] == "What color is it?"


def test_a_container_error_reaches_boto3_as_the_services_model_error(server_url: str) -> None:
    with pytest.raises(ClientError) as caught:
        runtime_client(server_url).invoke_endpoint(
            EndpointName=ENDPOINT, ContentType="application/json", Body=json.dumps({"image": "%%%"})
        )
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert error["Error"]["Code"] == "ModelError"
    assert error["Error"]["Message"].startswith("Received client error (400) from primary with message")
    assert error["OriginalStatusCode"] == 400  # type: ignore[typeddict-item]
    assert "base64" in json.loads(error["OriginalMessage"])["error"]  # type: ignore[typeddict-item]


def test_an_unknown_endpoint_is_the_services_validation_error(server_url: str) -> None:
    with pytest.raises(ClientError) as caught:
        runtime_client(server_url).invoke_endpoint(EndpointName="other", ContentType="image/jpeg", Body=photo(1))
    assert caught.value.response["Error"]["Code"] == "ValidationError"
    assert caught.value.response["Error"]["Message"] == "Endpoint other of account 000000000000 not found."


# --- dynamic batching ---------------------------------------------------------------------


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(
    loaded: LoadedModel, vision_passes: PassCounter
) -> None:
    bodies = [json_body(photo(seed), [f"What color is item {seed}?", "What brand is it?"]) for seed in range(6)]
    alone = [inference.predict_fn(inference.input_fn(b, "application/json"), loaded) for b in bodies]
    vision_passes.passes = 0
    server = ModelServer(lambda: loaded, max_batch_size=8, max_wait_ms=300)
    with serving(create_app(server)) as url:
        wait_until_ready(url)
        responses = post_all(url, bodies, "application/json")
    assert [r.status_code for r in responses] == [200] * 6
    for response, expected in zip(responses, alone, strict=True):
        got = response.json()
        assert (got["caption"], got["answers"]) == (expected["caption"], expected["answers"])
    assert server.batcher.stats.requests == 6
    assert server.batcher.stats.batches < 6
    assert vision_passes.passes == server.batcher.stats.batches  # one vision pass per batch, not per request


def test_the_model_is_loaded_and_run_on_one_thread(loaded: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: dict[str, set[int]] = {"load": set(), "predict": set()}
    real_predict = inference.predict_batch

    def recording_load() -> LoadedModel:
        threads["load"].add(threading.get_ident())
        return loaded

    def recording_predict(requests: Any, model: LoadedModel) -> list[dict[str, Any]]:
        threads["predict"].add(threading.get_ident())
        return real_predict(requests, model)

    monkeypatch.setattr(inference, "predict_batch", recording_predict)
    with serving(create_app(ModelServer(recording_load, max_wait_ms=0))) as url:
        wait_until_ready(url)
        for seed in range(3):
            httpx.post(f"{url}/invocations", content=photo(seed), headers={"Content-Type": "image/jpeg"})
    assert len(threads["load"]) == 1
    assert threads["predict"] == threads["load"]


def test_batching_off_is_one_call_per_request(loaded: LoadedModel, vision_passes: PassCounter) -> None:
    server = ModelServer(lambda: loaded, max_batch_size=1, max_wait_ms=0)
    with serving(create_app(server)) as url:
        wait_until_ready(url)
        assert [r.status_code for r in post_all(url, [photo(s) for s in range(3)], "image/jpeg")] == [200] * 3
    assert server.batcher.stats.batches == 3
    assert vision_passes.passes == 3


# --- the real command line, and the app through boto3 -------------------------------------


@pytest.fixture(scope="module")
def cli_server(tiny_model_dir: Path) -> Iterator[str]:
    """`python -m model.serve` in a subprocess, as a developer starts it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "model.serve", "--model-dir", str(tiny_model_dir), "--port", str(port)],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)  # what ECS or docker stop sends
        output = process.communicate(timeout=30)[0].decode()
        # uvicorn shuts down gracefully, then re-raises the signal so that the exit status tells it.
        assert process.returncode in (0, -signal.SIGTERM), output
        assert "Finished server process" in output


def test_the_cli_serves_the_runtime_api(cli_server: str, tiny_model_dir: Path) -> None:
    response = runtime_client(cli_server).invoke_endpoint(
        EndpointName=ENDPOINT, ContentType="image/jpeg", Body=photo(4)
    )
    assert json.loads(response["Body"].read())["model"] == tiny_model_dir.name


def test_the_cli_refuses_nonsense_batching_settings(tiny_model_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "model.serve", "--model-dir", str(tiny_model_dir), "--max-batch-size", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--max-batch-size must be at least 1" in result.stderr


def test_the_cli_exits_1_when_the_model_cannot_load(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "model.serve", "--model-dir", str(tmp_path), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 1
    assert "model failed to load" in result.stderr


async def test_the_app_runs_end_to_end_through_boto3_against_the_server(
    cli_server: str, settings: Settings, tiny_model_dir: Path
) -> None:
    service = settings.model_copy(update={"vision_backend": "sagemaker", "sagemaker_runtime_url": cli_server})
    async with LifespanManager(create_service(service)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            assert (await http.get("/readyz")).status_code == 200
            response = await http.post(
                "/analyze",
                files={"image": ("p.jpg", product_jpeg((640, 480)), "image/jpeg")},
                data={"questions": ["Is it waterproof?"]},
            )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["vision"]["model"] == tiny_model_dir.name
    assert body["vision"]["answers"][-1]["question"] == "Is it waterproof?"
    assert body["report"]["title"]
