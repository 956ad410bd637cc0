"""The production backends, chosen by settings alone, through `create_app`: S3 (moto) for
storage, a SageMaker endpoint (a loopback fake of the Runtime API, real botocore over HTTP)
for the model, the template writer for the report. Nothing else changes between the two."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Iterator

import boto3
import httpx
import pytest
from asgi_lifespan import LifespanManager
from moto import mock_aws

from app.bootstrap import create_app
from app.config import Settings
from tests.adapters.sagemaker_fake import FakeSageMakerRuntime, Reply, running_fake
from tests.imagegen import product_jpeg

BUCKET = "product-analyzer-test-images"


@pytest.fixture
def fake_sagemaker() -> Iterator[FakeSageMakerRuntime]:
    with running_fake() as fake:
        yield fake


@pytest.fixture
async def aws_client(settings: Settings, fake_sagemaker: FakeSageMakerRuntime) -> AsyncIterator[httpx.AsyncClient]:
    production = settings.model_copy(
        update={
            "storage_backend": "s3",
            "s3_bucket": BUCKET,
            "s3_prefix": "v1",
            "vision_backend": "sagemaker",
            "sagemaker_runtime_url": fake_sagemaker.url,
            "vision_timeout_seconds": 5.0,
        }
    )
    with mock_aws():
        boto3.client("s3", region_name="ca-central-1").create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "ca-central-1"}
        )
        async with LifespanManager(create_app(production)) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                yield http


async def test_photo_goes_to_s3_and_the_endpoint(
    aws_client: httpx.AsyncClient, fake_sagemaker: FakeSageMakerRuntime
) -> None:
    response = await aws_client.post("/analyze", files={"image": ("p.jpg", product_jpeg((640, 480)), "image/jpeg")})
    assert response.status_code == 200, response.text
    body = response.json()

    stored = boto3.client("s3", region_name="ca-central-1").get_object(
        Bucket=BUCKET, Key=f"v1/{body['image']['storage_key']}"
    )
    data = stored["Body"].read()
    assert hashlib.sha256(data).hexdigest() == body["image"]["sha256"]
    assert stored["ServerSideEncryption"] == "AES256"

    (invocation,) = fake_sagemaker.invocations()
    assert invocation.path == "/endpoints/blip2-endpoint/invocations"
    sent = invocation.json()
    assert len(base64.b64decode(sent["image"])) < len(data)  # the model's smaller copy
    assert sent["max_new_tokens"] == {"caption": 30, "answer": 10}
    assert body["vision"]["model"] == "blip2-test"
    assert body["report"]["writer"] == "template"


async def test_endpoint_model_error_is_a_502(
    aws_client: httpx.AsyncClient, fake_sagemaker: FakeSageMakerRuntime
) -> None:
    fake_sagemaker.replies.append(Reply.model_error())
    response = await aws_client.post("/analyze", files={"image": ("p.jpg", product_jpeg((64, 64)), "image/jpeg")})
    assert response.status_code == 502
    assert response.json()["error"] == "vision_model_error"
    assert "CUDA" not in response.text  # the container's message stays in our logs


async def test_readiness_pings_the_endpoint_and_heads_the_bucket(
    aws_client: httpx.AsyncClient, fake_sagemaker: FakeSageMakerRuntime
) -> None:
    assert (await aws_client.get("/readyz")).json()["checks"] == {"database": "ok", "storage": "ok", "vision": "ok"}
    fake_sagemaker.ping_status = 503
    not_ready = await aws_client.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["checks"]["vision"] != "ok"
