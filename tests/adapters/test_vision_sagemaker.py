import base64
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import boto3
import httpx
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws

from app.adapters.aws import build_sagemaker_client, build_sagemaker_runtime_client
from app.adapters.vision_sagemaker import EndpointStatusReadiness, PingReadiness, SageMakerVision
from app.config import Settings
from app.domain.models import VisionResult
from app.errors import AppError, NotReady, UpstreamTimeout, UpstreamUnavailable, VisionModelError
from tests.adapters.sagemaker_fake import FakeSageMakerRuntime, Reply, running_fake

if TYPE_CHECKING:
    from mypy_boto3_sagemaker import SageMakerClient

REGION = "ca-central-1"
ENDPOINT = "blip2-endpoint"
IMAGE = b"\xff\xd8\xff\xe0 not really a jpeg \x00\x01\x02"
QUESTIONS = ["What brand is it?", "What color is it?", "What text is visible on it?"]
READ_TIMEOUT_S = 0.5


@pytest.fixture
def fake() -> Iterator[FakeSageMakerRuntime]:
    with running_fake() as server:
        yield server


def settings_for(url: str) -> Settings:
    return Settings(
        _env_file=None,
        vision_backend="sagemaker",
        sagemaker_endpoint=ENDPOINT,
        sagemaker_runtime_url=url,
        vision_timeout_seconds=READ_TIMEOUT_S,
        aws_region=REGION,
    )


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


def make_vision(url: str, http: httpx.AsyncClient, *, max_attempts: int = 3) -> SageMakerVision:
    settings = settings_for(url)
    return SageMakerVision(
        build_sagemaker_runtime_client(settings),
        endpoint_name=settings.sagemaker_endpoint,
        readiness=PingReadiness(url, http, timeout_s=0.5),
        max_attempts=max_attempts,
        backoff_base_s=0.001,
        backoff_cap_s=0.005,
    )


@pytest.fixture
def vision(aws_env: None, fake: FakeSageMakerRuntime, http: httpx.AsyncClient) -> SageMakerVision:
    return make_vision(fake.url, http)


async def describe(vision: SageMakerVision, questions: list[str] = QUESTIONS) -> VisionResult:
    return await vision.describe(IMAGE, questions, caption_max_new_tokens=30, answer_max_new_tokens=10)


def closed_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the request and the response --------------------------------------------------------------


async def test_describe_sends_the_vision_contract(vision: SageMakerVision, fake: FakeSageMakerRuntime) -> None:
    await describe(vision)

    [sent] = fake.invocations()
    assert sent.method == "POST"
    assert sent.path == f"/endpoints/{ENDPOINT}/invocations"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["accept"] == "application/json"
    assert sent.headers["authorization"].startswith("AWS4-HMAC-SHA256 ")
    assert f"/{REGION}/sagemaker/aws4_request" in sent.headers["authorization"]
    body = sent.json()
    assert base64.b64decode(body["image"], validate=True) == IMAGE
    assert body["questions"] == QUESTIONS
    assert body["max_new_tokens"] == {"caption": 30, "answer": 10}


async def test_describe_returns_the_parsed_response(vision: SageMakerVision) -> None:
    result = await describe(vision)

    assert result.model == "blip2-test"
    assert result.caption == "a red leather handbag on a table"
    assert [(qa.question, qa.answer) for qa in result.answers] == [(q, f"answer {i}") for i, q in enumerate(QUESTIONS)]


async def test_model_name_falls_back_to_the_endpoint(vision: SageMakerVision, fake: FakeSageMakerRuntime) -> None:
    fake.replies.append(Reply.ok({"caption": "a mug", "answers": []}))

    result = await describe(vision, [])

    assert vision.name == ENDPOINT
    assert result.model == ENDPOINT


@pytest.mark.parametrize(
    "reply",
    [
        Reply.raw(b"<html>not json</html>", "text/html"),
        Reply.raw(b"\xff\xfe\x00"),
        Reply.ok({"model": "m", "answers": []}),  # no caption
        Reply.ok({"model": "m", "caption": "a mug"}),  # no answers
        Reply.ok({"model": "m", "caption": "a mug", "answers": [{"question": "q"}]}),  # no answer text
        Reply.ok({"model": "m", "caption": "a mug", "answers": [{"question": "q", "answer": "a"}]}),  # 1 != 3
        Reply.raw(b"[]"),
    ],
    ids=["html", "not-utf8", "no-caption", "no-answers", "no-answer-text", "wrong-count", "list"],
)
async def test_malformed_response_is_a_vision_model_error(
    vision: SageMakerVision, fake: FakeSageMakerRuntime, reply: Reply
) -> None:
    fake.replies.append(reply)

    with pytest.raises(VisionModelError) as caught:
        await describe(vision)

    assert caught.value.status_code == 502
    assert caught.value.code == "vision_model_error"
    assert len(fake.invocations()) == 1


# --- errors and retries ----------------------------------------------------------------------------


async def test_model_error_is_a_502_and_never_retried(vision: SageMakerVision, fake: FakeSageMakerRuntime) -> None:
    fake.replies.append(Reply.model_error(500, "CUDA out of memory"))

    with pytest.raises(VisionModelError) as caught:
        await describe(vision)

    assert caught.value.status_code == 502
    assert "CUDA" not in caught.value.detail
    # botocore parsed the wire shape as the modeled ModelError, members included.
    cause = caught.value.__cause__
    assert isinstance(cause, ClientError)
    assert type(cause).__name__ == "ModelError"
    members: Any = cause.response
    assert members["OriginalStatusCode"] == 500
    assert members["OriginalMessage"] == "CUDA out of memory"
    assert len(fake.invocations()) == 1


async def test_throttling_is_retried_until_success(vision: SageMakerVision, fake: FakeSageMakerRuntime) -> None:
    fake.replies.extend([Reply.throttling(), Reply.throttling()])

    result = await describe(vision)

    assert result.caption == "a red leather handbag on a table"
    assert len(fake.invocations()) == 3


async def test_throttling_on_every_attempt_is_a_503(vision: SageMakerVision, fake: FakeSageMakerRuntime) -> None:
    fake.replies.extend([Reply.throttling()] * 5)

    with pytest.raises(UpstreamUnavailable) as caught:
        await describe(vision)

    assert caught.value.status_code == 503
    assert len(fake.invocations()) == 3  # max_attempts, no more: botocore's own retries are off


async def test_service_unavailable_is_retried(vision: SageMakerVision, fake: FakeSageMakerRuntime) -> None:
    fake.replies.append(Reply.service_unavailable())

    await describe(vision)

    assert len(fake.invocations()) == 2


async def test_one_attempt_means_no_retry(aws_env: None, fake: FakeSageMakerRuntime, http: httpx.AsyncClient) -> None:
    fake.replies.append(Reply.throttling())

    with pytest.raises(UpstreamUnavailable):
        await describe(make_vision(fake.url, http, max_attempts=1))

    assert len(fake.invocations()) == 1


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply.service_unavailable(), UpstreamUnavailable),
        (Reply.model_not_ready(), UpstreamUnavailable),
        (Reply.endpoint_not_found(ENDPOINT), UpstreamUnavailable),
        (Reply.validation("Received an invalid Content-Type"), VisionModelError),
        (Reply.error(500, "InternalFailure", "An internal failure occurred."), VisionModelError),
        (Reply.error(403, "AccessDeniedException", f"User is not authorized on {ENDPOINT}"), VisionModelError),
    ],
    ids=["service-unavailable", "model-not-ready", "endpoint-not-found", "validation", "internal", "access-denied"],
)
async def test_error_mapping(
    aws_env: None, fake: FakeSageMakerRuntime, http: httpx.AsyncClient, reply: Reply, expected: type[AppError]
) -> None:
    vision = make_vision(fake.url, http, max_attempts=1)
    fake.replies.append(reply)

    with pytest.raises(expected) as caught:
        await describe(vision)

    assert type(caught.value) is expected
    assert ENDPOINT not in caught.value.detail
    assert isinstance(caught.value.__cause__, ClientError)


async def test_only_throttling_and_service_unavailable_are_retried(
    vision: SageMakerVision, fake: FakeSageMakerRuntime
) -> None:
    fake.replies.extend([Reply.model_not_ready(), Reply.endpoint_not_found(ENDPOINT), Reply.validation("bad")])

    for _ in range(3):
        with pytest.raises((UpstreamUnavailable, VisionModelError)):
            await describe(vision)

    assert len(fake.invocations()) == 3  # one each


async def test_slow_model_is_a_504_and_never_retried(vision: SageMakerVision, fake: FakeSageMakerRuntime) -> None:
    fake.replies.append(Reply.slow(5.0))
    started = time.monotonic()

    with pytest.raises(UpstreamTimeout) as caught:
        await describe(vision)

    assert caught.value.status_code == 504
    assert time.monotonic() - started < 2.0  # the read timeout from settings, not the model's 5 s
    assert len(fake.invocations()) == 1


async def test_unreachable_server_is_a_503(aws_env: None, http: httpx.AsyncClient) -> None:
    vision = make_vision(f"http://127.0.0.1:{closed_loopback_port()}", http)

    with pytest.raises(UpstreamUnavailable) as caught:
        await describe(vision)

    assert caught.value.status_code == 503


async def test_backoff_grows_with_jitter_up_to_the_cap(
    aws_env: None, fake: FakeSageMakerRuntime, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(fake.url)
    vision = SageMakerVision(
        build_sagemaker_runtime_client(settings),
        endpoint_name=ENDPOINT,
        readiness=PingReadiness(fake.url, http),
        max_attempts=5,
        backoff_base_s=0.2,
        backoff_cap_s=0.5,
    )
    pauses: list[float] = []

    async def record(delay: float) -> None:
        pauses.append(delay)

    monkeypatch.setattr(anyio, "sleep", record)
    fake.replies.extend([Reply.throttling()] * 4)

    await describe(vision)

    ceilings = [0.2, 0.4, 0.5, 0.5]
    assert len(pauses) == len(ceilings)
    for pause, ceiling in zip(pauses, ceilings, strict=True):
        assert ceiling / 2 <= pause <= ceiling
    # Jittered: tasks throttled at the same moment do not all come back at the same moment.
    assert len({vision._backoff_s(1) for _ in range(20)}) > 1


def test_runtime_builder_turns_botocore_retries_off(aws_env: None) -> None:
    client = build_sagemaker_runtime_client(settings_for("http://127.0.0.1:8081"))

    config: Any = client.meta.config
    assert client.meta.endpoint_url == "http://127.0.0.1:8081"
    assert client.meta.region_name == REGION
    assert config.read_timeout == READ_TIMEOUT_S
    assert config.connect_timeout <= 5
    assert config.retries["total_max_attempts"] == 1


# --- readiness -------------------------------------------------------------------------------------


async def test_check_pings_the_local_model_server(vision: SageMakerVision, fake: FakeSageMakerRuntime) -> None:
    await vision.check()

    assert [(r.method, r.path) for r in fake.requests] == [("GET", "/ping")]


async def test_check_fails_when_ping_is_not_200(vision: SageMakerVision, fake: FakeSageMakerRuntime) -> None:
    fake.ping_status = 503

    with pytest.raises(NotReady):
        await vision.check()


async def test_check_fails_when_the_server_is_down(http: httpx.AsyncClient) -> None:
    with pytest.raises(NotReady):
        await PingReadiness(f"http://127.0.0.1:{closed_loopback_port()}/", http)()


@pytest.fixture
def sagemaker(aws_env: None) -> Iterator["SageMakerClient"]:
    with mock_aws():
        client = build_sagemaker_client(settings_for("http://unused"))
        client.create_model(
            ModelName="blip2",
            ExecutionRoleArn="arn:aws:iam::123456789012:role/sagemaker",
            PrimaryContainer={"Image": "pytorch-inference:2", "ModelDataUrl": "s3://models/blip2-endpoint.tar.gz"},
        )
        client.create_endpoint_config(
            EndpointConfigName="blip2-config",
            ProductionVariants=[
                {
                    "VariantName": "main",
                    "ModelName": "blip2",
                    "InitialInstanceCount": 1,
                    "InstanceType": "ml.g4dn.xlarge",
                }
            ],
        )
        client.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName="blip2-config")
        yield client


async def test_endpoint_in_service_is_ready(sagemaker: "SageMakerClient") -> None:
    await EndpointStatusReadiness(sagemaker, ENDPOINT)()


async def test_missing_endpoint_is_not_ready(sagemaker: "SageMakerClient") -> None:
    with pytest.raises(NotReady):
        await EndpointStatusReadiness(sagemaker, "no-such-endpoint")()


def describe_endpoint_response(status: str) -> dict[str, object]:
    now = datetime(2025, 3, 7, tzinfo=UTC)
    return {
        "EndpointName": ENDPOINT,
        "EndpointArn": f"arn:aws:sagemaker:{REGION}:123456789012:endpoint/{ENDPOINT}",
        "EndpointStatus": status,
        "CreationTime": now,
        "LastModifiedTime": now,
    }


@pytest.mark.parametrize(
    ("status", "ready"),
    [("InService", True), ("Updating", True), ("Creating", False), ("Failed", False), ("OutOfService", False)],
)
async def test_endpoint_status_decides_readiness(aws_env: None, status: str, ready: bool) -> None:
    client = boto3.client("sagemaker", region_name=REGION)
    readiness = EndpointStatusReadiness(client, ENDPOINT, ttl_s=0)

    with Stubber(client) as stub:
        stub.add_response("describe_endpoint", describe_endpoint_response(status), {"EndpointName": ENDPOINT})
        if ready:
            await readiness()
        else:
            with pytest.raises(NotReady):
                await readiness()


async def test_endpoint_readiness_is_cached_only_when_ready(aws_env: None) -> None:
    client = boto3.client("sagemaker", region_name=REGION)
    readiness = EndpointStatusReadiness(client, ENDPOINT, ttl_s=60)

    with Stubber(client) as stub:
        stub.add_response("describe_endpoint", describe_endpoint_response("Creating"))
        stub.add_response("describe_endpoint", describe_endpoint_response("InService"))
        with pytest.raises(NotReady):
            await readiness()
        await readiness()
        await readiness()  # answered from the cache: a third DescribeEndpoint would fail the Stubber
        stub.assert_no_pending_responses()
