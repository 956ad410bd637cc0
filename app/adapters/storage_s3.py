"""`ImageStore` on S3: server-side encrypted puts under a key prefix, off the event loop."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio.to_thread
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    ReadTimeoutError,
)

from app.adapters.aws import THROTTLING_CODES, error_code, http_status
from app.errors import AppError, NotReady, UpstreamError, UpstreamTimeout, UpstreamUnavailable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import PutObjectRequestTypeDef


class S3ImageStore:
    """Store images as S3 objects `{prefix}/{key}`, encrypted with SSE-KMS when a key is given, else SSE-S3."""

    def __init__(self, client: S3Client, *, bucket: str, prefix: str = "", kms_key_id: str | None = None) -> None:
        self._client = client
        self._bucket = bucket
        stripped = prefix.strip("/")
        self._prefix = f"{stripped}/" if stripped else ""
        self._kms_key_id = kms_key_id

    def object_key(self, key: str) -> str:
        """Return the S3 object key that `key` is stored under."""
        return f"{self._prefix}{key.lstrip('/')}"

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        """Put `data` under the prefixed key; raise `UpstreamError`, `UpstreamUnavailable` or `UpstreamTimeout`."""
        request: PutObjectRequestTypeDef = {
            "Bucket": self._bucket,
            "Key": self.object_key(key),
            "Body": data,
            "ContentType": content_type,
            "ServerSideEncryption": "AES256",
        }
        if self._kms_key_id:
            request["ServerSideEncryption"] = "aws:kms"
            request["SSEKMSKeyId"] = self._kms_key_id
            # An S3 Bucket Key cuts KMS requests (and their cost and throttling) by orders of magnitude.
            request["BucketKeyEnabled"] = True

        def _put() -> None:
            self._client.put_object(**request)

        try:
            await anyio.to_thread.run_sync(_put)
        except (BotoCoreError, ClientError) as exc:
            raise map_s3_error(exc) from exc

    async def delete(self, key: str) -> None:
        """Delete the object; S3 answers success for a key that is not there."""
        try:
            await anyio.to_thread.run_sync(
                lambda: self._client.delete_object(Bucket=self._bucket, Key=self.object_key(key))
            )
        except (BotoCoreError, ClientError) as exc:
            raise map_s3_error(exc, action="delete the image") from exc

    async def check(self) -> None:
        """Return when the bucket is reachable with our credentials; raise `NotReady` otherwise."""
        try:
            # abandon_on_cancel: /readyz's deadline answers at once even while botocore retries.
            await anyio.to_thread.run_sync(
                lambda: self._client.head_bucket(Bucket=self._bucket), abandon_on_cancel=True
            )
        except (BotoCoreError, ClientError) as exc:
            raise NotReady("The image store is not reachable.") from exc


def map_s3_error(exc: BotoCoreError | ClientError, *, action: str = "store the image") -> AppError:
    """Translate a botocore error into the `AppError` a client may see; details never name the bucket."""
    if isinstance(exc, ReadTimeoutError | ConnectTimeoutError):
        return UpstreamTimeout("The image store did not answer in time.")
    if isinstance(exc, ClientError):
        if http_status(exc) >= 500 or error_code(exc) in THROTTLING_CODES:
            return UpstreamUnavailable("The image store is unavailable; retry later.")
        # AccessDenied, NoSuchBucket, KMS key problems: our configuration, not the client's request.
        return UpstreamError(f"The image store refused to {action}.")
    # EndpointConnectionError, a dropped connection, credentials that could not be fetched.
    return UpstreamUnavailable("The image store is unavailable; retry later.")
