"""`LogDestination` on CloudWatch Logs: PutLogEvents into one log stream of one log group, off the event loop.

The stream is created on first use (CreateLogStream; one that already exists is fine) and once more when
PutLogEvents says it is gone. Sequence tokens are not sent: CloudWatch ignores them since January 2023.
Batches arrive already within PutLogEvents' limits (`app.services.edge_logs` cuts them); this adapter only
sends, maps errors and counts what CloudWatch rejected.

A timeout may hide a call CloudWatch did accept, and the shipper retries it: delivery is at least once.
IAM: the task role needs `logs:CreateLogStream` and `logs:PutLogEvents` on the log group.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio.to_thread
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ParamValidationError,
    ReadTimeoutError,
)

from app.adapters.aws import THROTTLING_CODES, error_code, http_status
from app.domain.ports import LogLine
from app.errors import AppError, UpstreamError, UpstreamTimeout, UpstreamUnavailable

if TYPE_CHECKING:
    from mypy_boto3_logs import CloudWatchLogsClient
    from mypy_boto3_logs.type_defs import InputLogEventTypeDef, RejectedLogEventsInfoTypeDef

# Answers that mean "not now": worth the shipper's backoff. Throttling is THROTTLING_CODES.
UNAVAILABLE_CODES = THROTTLING_CODES | {"ServiceUnavailableException", "ServiceUnavailable", "InternalFailure"}

# Log stream names may not contain ':' or '*' and hold at most 512 characters.
_STREAM_NAME_UNSAFE = re.compile(r"[:*\s]+")


def default_stream_name() -> str:
    """Return a log stream name of this process's own: `edge/<hostname>/<pid>-<random>`.

    On Fargate the hostname is the task's; the random part keeps a restarted container (same
    hostname, often the same pid) off the stream of its predecessor.
    """
    host = _STREAM_NAME_UNSAFE.sub("-", socket.gethostname()).strip("-")[:200] or "host"
    return f"edge/{host}/{os.getpid()}-{secrets.token_hex(4)}"


class CloudWatchLogsDestination:
    """Write batches of log lines to `group`/`stream` with PutLogEvents."""

    name = "cloudwatch_logs"

    def __init__(self, client: CloudWatchLogsClient, group: str, stream: str) -> None:
        if not group or not stream:
            raise ValueError("CloudWatchLogsDestination needs a log group and a log stream name")
        self._client = client
        self._group = group
        self._stream = stream
        self._stream_ready = False

    @property
    def group(self) -> str:
        return self._group

    @property
    def stream(self) -> str:
        return self._stream

    async def put(self, lines: Sequence[LogLine]) -> int:
        """Send one batch (sorted, within PutLogEvents' limits); return how many events CloudWatch rejected.

        Raise `UpstreamUnavailable` (throttling, 5xx, connection errors) or `UpstreamTimeout` (read
        timeout) when a retry may succeed, `UpstreamError` when it cannot.
        """
        if not lines:
            return 0
        events: list[InputLogEventTypeDef] = [
            {"timestamp": line.timestamp_ms, "message": line.message} for line in lines
        ]
        if not self._stream_ready:
            await self._create_stream()
        try:
            info = await self._put_events(events)
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise map_logs_error(exc) from exc
            # The stream was deleted (retention, an operator): create it again, once, then resend.
            self._stream_ready = False
            await self._create_stream()
            try:
                info = await self._put_events(events)
            except (BotoCoreError, ClientError) as again:
                raise map_logs_error(again) from again
        except BotoCoreError as exc:
            raise map_logs_error(exc) from exc
        return rejected_count(info, len(events))

    async def _put_events(self, events: list[InputLogEventTypeDef]) -> RejectedLogEventsInfoTypeDef:
        def put() -> RejectedLogEventsInfoTypeDef:
            response = self._client.put_log_events(
                logGroupName=self._group, logStreamName=self._stream, logEvents=events
            )
            return response.get("rejectedLogEventsInfo", {})

        # abandon_on_cancel: the shipper's shutdown deadline is not held up by one slow call.
        return await anyio.to_thread.run_sync(put, abandon_on_cancel=True)

    async def _create_stream(self) -> None:
        def create() -> None:
            try:
                self._client.create_log_stream(logGroupName=self._group, logStreamName=self._stream)
            except ClientError as exc:
                if error_code(exc) != "ResourceAlreadyExistsException":
                    raise

        try:
            await anyio.to_thread.run_sync(create, abandon_on_cancel=True)
        except (BotoCoreError, ClientError) as exc:
            raise map_logs_error(exc, action="create its log stream") from exc
        self._stream_ready = True


def rejected_count(info: RejectedLogEventsInfoTypeDef, sent: int) -> int:
    """Count the events of a batch of `sent` that `rejectedLogEventsInfo` names.

    Too old and expired events are a prefix of the (sorted) batch, ending at an inclusive index;
    too new ones a suffix, starting at an index.
    """
    old_end = max(info.get("tooOldLogEventEndIndex", -1), info.get("expiredLogEventEndIndex", -1))
    prefix = min(sent, max(0, old_end + 1))
    new_start = info.get("tooNewLogEventStartIndex")
    suffix_start = sent if new_start is None else max(prefix, min(sent, new_start))
    return prefix + (sent - suffix_start)


def map_logs_error(exc: BotoCoreError | ClientError, *, action: str = "accept the log events") -> AppError:
    """Translate a botocore error into an `AppError`: retryable (503, 504) or not (502)."""
    if isinstance(exc, ReadTimeoutError):
        return UpstreamTimeout("CloudWatch Logs did not answer in time.")
    if isinstance(exc, ClientError):
        if http_status(exc) >= 500 or error_code(exc) in UNAVAILABLE_CODES:
            return UpstreamUnavailable("CloudWatch Logs is unavailable; retry later.")
        # AccessDenied, a missing log group, InvalidParameter: sending the same request again fails again.
        return UpstreamError(f"CloudWatch Logs refused to {action}.")
    if isinstance(exc, ParamValidationError):
        return UpstreamError(f"CloudWatch Logs refused to {action}.")
    # EndpointConnectionError, ConnectTimeoutError, a dropped connection, credentials not fetched yet.
    return UpstreamUnavailable("CloudWatch Logs is unavailable; retry later.")
