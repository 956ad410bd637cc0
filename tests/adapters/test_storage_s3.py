import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws

from app.adapters.aws import build_s3_client
from app.adapters.storage_s3 import S3ImageStore
from app.config import Settings
from app.errors import AppError, NotReady, UpstreamError, UpstreamTimeout, UpstreamUnavailable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REGION = "ca-central-1"
BUCKET = "product-analyzer-images-test"
KEY = "uploads/user-1/2025/03/photo.jpg"


@pytest.fixture
def settings() -> Settings:
    return Settings(_env_file=None, storage_backend="s3", s3_bucket=BUCKET, aws_region=REGION)


@pytest.fixture
def s3(aws_env: None, settings: Settings) -> Iterator["S3Client"]:
    with mock_aws():
        client = build_s3_client(settings)
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "ca-central-1"})
        yield client


def one_attempt_client(endpoint_url: str, *, read_timeout: float = 0.3) -> "S3Client":
    return boto3.client(
        "s3",
        region_name=REGION,
        endpoint_url=endpoint_url,
        config=Config(connect_timeout=0.3, read_timeout=read_timeout, retries={"total_max_attempts": 1}),
    )


def test_builder_sets_region_timeouts_retries_and_endpoint(aws_env: None) -> None:
    settings = Settings(_env_file=None, aws_region=REGION, s3_endpoint_url="http://127.0.0.1:9000")

    client = build_s3_client(settings)

    config: Any = client.meta.config
    assert client.meta.region_name == REGION
    assert client.meta.endpoint_url == "http://127.0.0.1:9000"
    assert config.connect_timeout <= 5
    assert config.read_timeout <= 10
    # Three attempts in all: botocore's own `max_attempts` key would mean three *retries*.
    assert config.retries == {"mode": "standard", "total_max_attempts": 3}


async def test_put_stores_bytes_and_content_type_with_sse_s3(s3: "S3Client") -> None:
    store = S3ImageStore(s3, bucket=BUCKET, prefix="", kms_key_id=None)

    await store.put(KEY, b"\xff\xd8jpeg", "image/jpeg")

    got = s3.get_object(Bucket=BUCKET, Key=KEY)
    assert got["Body"].read() == b"\xff\xd8jpeg"
    assert got["ContentType"] == "image/jpeg"
    assert got["ServerSideEncryption"] == "AES256"


async def test_put_with_a_kms_key_uses_sse_kms_and_a_bucket_key(s3: "S3Client") -> None:
    key_id = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["KeyId"]
    store = S3ImageStore(s3, bucket=BUCKET, prefix="", kms_key_id=key_id)

    await store.put(KEY, b"\xff\xd8jpeg", "image/jpeg")

    head = s3.head_object(Bucket=BUCKET, Key=KEY)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == key_id
    assert head["BucketKeyEnabled"] is True


@pytest.mark.parametrize(
    ("prefix", "stored_as"),
    [
        ("", KEY),
        ("prod", f"prod/{KEY}"),
        ("prod/", f"prod/{KEY}"),
        ("/tenants/ca/", f"tenants/ca/{KEY}"),
    ],
)
async def test_prefix_is_joined_with_exactly_one_slash(s3: "S3Client", prefix: str, stored_as: str) -> None:
    store = S3ImageStore(s3, bucket=BUCKET, prefix=prefix)

    await store.put(KEY, b"data", "image/jpeg")

    listed = s3.list_objects_v2(Bucket=BUCKET)
    assert [obj["Key"] for obj in listed["Contents"]] == [stored_as]


async def test_check_passes_for_an_existing_bucket(s3: "S3Client") -> None:
    await S3ImageStore(s3, bucket=BUCKET).check()


async def test_check_fails_for_a_missing_bucket(s3: "S3Client") -> None:
    with pytest.raises(NotReady) as caught:
        await S3ImageStore(s3, bucket="no-such-bucket-here").check()
    assert isinstance(caught.value.__cause__, ClientError)


async def test_put_into_a_missing_bucket_is_a_502_that_names_no_bucket(s3: "S3Client") -> None:
    store = S3ImageStore(s3, bucket="no-such-bucket-here")

    with pytest.raises(UpstreamError) as caught:
        await store.put(KEY, b"data", "image/jpeg")

    assert type(caught.value) is UpstreamError
    assert caught.value.status_code == 502
    assert "no-such-bucket-here" not in caught.value.detail
    assert "NoSuchBucket" not in caught.value.detail
    assert isinstance(caught.value.__cause__, ClientError)  # the AWS message stays in the chain, for logs


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("SlowDown", 503, UpstreamUnavailable),
        ("InternalError", 500, UpstreamUnavailable),
        ("AccessDenied", 403, UpstreamError),
        ("KMS.DisabledException", 400, UpstreamError),
    ],
)
async def test_client_errors_are_mapped_by_status_and_code(
    aws_env: None, code: str, status: int, expected: type[AppError]
) -> None:
    client = boto3.client("s3", region_name=REGION)
    store = S3ImageStore(client, bucket=BUCKET)

    with Stubber(client) as stub:
        stub.add_client_error("put_object", service_error_code=code, http_status_code=status)
        with pytest.raises(expected) as caught:
            await store.put(KEY, b"data", "image/jpeg")

    assert type(caught.value) is expected
    assert code not in caught.value.detail


def closed_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_endpoint_is_a_503(aws_env: None) -> None:
    client = one_attempt_client(f"http://127.0.0.1:{closed_loopback_port()}")

    with pytest.raises(UpstreamUnavailable) as caught:
        await S3ImageStore(client, bucket=BUCKET).put(KEY, b"data", "image/jpeg")

    assert caught.value.status_code == 503


async def test_silent_endpoint_is_a_504(aws_env: None) -> None:
    # A listening socket that never accepts: the TCP handshake completes, no answer ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        client = one_attempt_client(f"http://127.0.0.1:{silent.getsockname()[1]}", read_timeout=0.3)

        with pytest.raises(UpstreamTimeout) as caught:
            await S3ImageStore(client, bucket=BUCKET).put(KEY, b"data", "image/jpeg")

    assert caught.value.status_code == 504


async def test_delete_removes_the_prefixed_object_and_a_missing_key_is_fine(s3: "S3Client") -> None:
    store = S3ImageStore(s3, bucket=BUCKET, prefix="images")
    await store.put(KEY, b"data", "image/jpeg")
    await store.put("uploads/other.jpg", b"other", "image/jpeg")

    await store.delete(KEY)
    await store.delete(KEY)  # a retried delete

    remaining = [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert remaining == ["images/uploads/other.jpg"]


async def test_delete_in_a_missing_bucket_says_delete(s3: "S3Client") -> None:
    with pytest.raises(UpstreamError) as caught:
        await S3ImageStore(s3, bucket="no-such-bucket-here").delete(KEY)
    assert caught.value.detail == "The image store refused to delete the image."
