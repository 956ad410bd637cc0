"""boto3 clients with explicit timeouts and retries, and the botocore error facts adapters map.

The builders run in the lifespan (`app.bootstrap`), never at import. Each uses its own
`boto3.session.Session`, because the module-level default session is not safe to share
between threads while clients are being created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3.session
from botocore.config import Config
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_logs import CloudWatchLogsClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sagemaker import SageMakerClient
    from mypy_boto3_sagemaker_runtime import SageMakerRuntimeClient

    from app.config import Settings

# S3 answers a put of a ~200 KB JPEG in well under a second; a few seconds bounds a stuck socket.
S3_CONNECT_TIMEOUT_S = 2.0
S3_READ_TIMEOUT_S = 5.0
S3_MAX_ATTEMPTS = 3

SAGEMAKER_CONNECT_TIMEOUT_S = 2.0
# DescribeEndpoint only feeds /readyz, which a load balancer polls with its own short timeout.
SAGEMAKER_CONTROL_READ_TIMEOUT_S = 3.0
SAGEMAKER_CONTROL_MAX_ATTEMPTS = 2

LOGS_CONNECT_TIMEOUT_S = 2.0
# PutLogEvents carries up to 1 MiB; CloudWatch answers it in well under a second when healthy.
LOGS_READ_TIMEOUT_S = 10.0

# Error codes AWS uses for "slow down"; botocore's standard retry mode treats the same set as throttling.
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "SlowDown",
        "BandwidthLimitExceeded",
        "LimitExceededException",
    }
)


def build_s3_client(settings: Settings) -> S3Client:
    """Build the S3 client: explicit timeouts, botocore's standard retries (3 attempts)."""
    config = Config(
        region_name=settings.aws_region,
        connect_timeout=S3_CONNECT_TIMEOUT_S,
        read_timeout=S3_READ_TIMEOUT_S,
        # total_max_attempts counts the first try; botocore's `max_attempts` would count retries only.
        retries={"mode": "standard", "total_max_attempts": S3_MAX_ATTEMPTS},
    )
    return boto3.session.Session().client("s3", endpoint_url=settings.s3_endpoint_url, config=config)


def build_sagemaker_runtime_client(settings: Settings) -> SageMakerRuntimeClient:
    """Build the SageMaker Runtime client with botocore retries off (the adapter retries throttling only)."""
    config = Config(
        region_name=settings.aws_region,
        connect_timeout=SAGEMAKER_CONNECT_TIMEOUT_S,
        read_timeout=settings.vision_timeout_seconds,
        # One attempt: botocore would also retry timeouts and 5xx, and a retried GPU call
        # doubles the worst-case latency. `SageMakerVision` retries throttling itself.
        retries={"mode": "standard", "total_max_attempts": 1},
    )
    return boto3.session.Session().client(
        "sagemaker-runtime", endpoint_url=settings.sagemaker_runtime_url, config=config
    )


def build_sagemaker_client(settings: Settings) -> SageMakerClient:
    """Build the SageMaker control-plane client, used only to ask whether the endpoint is InService."""
    config = Config(
        region_name=settings.aws_region,
        connect_timeout=SAGEMAKER_CONNECT_TIMEOUT_S,
        read_timeout=SAGEMAKER_CONTROL_READ_TIMEOUT_S,
        retries={"mode": "standard", "total_max_attempts": SAGEMAKER_CONTROL_MAX_ATTEMPTS},
    )
    return boto3.session.Session().client("sagemaker", config=config)


def build_logs_client(settings: Settings) -> CloudWatchLogsClient:
    """Build the CloudWatch Logs client with botocore retries off (the edge log shipper retries itself)."""
    config = Config(
        region_name=settings.aws_region,
        connect_timeout=LOGS_CONNECT_TIMEOUT_S,
        read_timeout=LOGS_READ_TIMEOUT_S,
        # One attempt: `EdgeLogShipper` backs off and retries throttling, 5xx and timeouts for as long as
        # it runs, holding the batch; botocore retrying underneath would only stack a second backoff.
        retries={"mode": "standard", "total_max_attempts": 1},
    )
    return boto3.session.Session().client("logs", config=config)


def error_code(exc: ClientError) -> str:
    """Return the AWS error code of `exc` ("" when the response carries none)."""
    return exc.response.get("Error", {}).get("Code", "") or ""


def http_status(exc: ClientError) -> int:
    """Return the HTTP status of the failed call (0 when unknown)."""
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0
