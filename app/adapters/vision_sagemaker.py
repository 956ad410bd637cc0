"""`VisionModel` on a SageMaker real-time endpoint (or a local server speaking the same Runtime API).

The request and response bodies are the vision contract of DESIGN.md. botocore's own retries
are off for the runtime client (`app.adapters.aws.build_sagemaker_runtime_client`); this adapter
retries only answers that mean "the request never reached the model, try again": throttling and
`ServiceUnavailable`. A timeout or a `ModelError` is never retried, since the GPU may already have
spent the whole budget on it. `ModelNotReadyException` is not retried either: a model that is
still loading stays unready for far longer than a backoff that fits the 5-10 s latency target.

Readiness is injected: `PingReadiness` for a local model server (`SAGEMAKER_RUNTIME_URL`),
`EndpointStatusReadiness` for a real endpoint.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
import httpx
import structlog
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError

from app.adapters.aws import THROTTLING_CODES, error_code
from app.domain import vision_contract
from app.domain.models import VisionResult
from app.errors import AppError, NotReady, UpstreamTimeout, UpstreamUnavailable, VisionModelError

if TYPE_CHECKING:
    from mypy_boto3_sagemaker import SageMakerClient
    from mypy_boto3_sagemaker_runtime import SageMakerRuntimeClient

log = structlog.stdlib.get_logger(__name__)

Readiness = Callable[[], Awaitable[None]]
"""Returns when the model can serve; raises `NotReady` otherwise."""

RETRYABLE_CODES = THROTTLING_CODES | {"ServiceUnavailable"}
UNAVAILABLE_CODES = THROTTLING_CODES | {"ServiceUnavailable", "ModelNotReadyException"}

# SageMaker keeps serving the previous configuration while an endpoint updates or rolls back.
SERVING_STATUSES = frozenset({"InService", "Updating", "SystemUpdating", "RollingBack"})


class SageMakerVision:
    """Describe images with BLIP-2 behind `InvokeEndpoint`."""

    def __init__(
        self,
        runtime: SageMakerRuntimeClient,
        *,
        endpoint_name: str,
        readiness: Readiness,
        max_attempts: int = 3,
        backoff_base_s: float = 0.2,
        backoff_cap_s: float = 2.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.name = endpoint_name
        self._runtime = runtime
        self._endpoint_name = endpoint_name
        self._readiness = readiness
        self._max_attempts = max_attempts
        self._backoff_base_s = backoff_base_s
        self._backoff_cap_s = backoff_cap_s

    async def describe(
        self,
        image_jpeg: bytes,
        questions: Sequence[str],
        *,
        caption_max_new_tokens: int,
        answer_max_new_tokens: int,
    ) -> VisionResult:
        """Caption the image and answer each question, in order, with one endpoint invocation."""
        body = vision_contract.request_body(
            image_jpeg,
            questions,
            caption_max_new_tokens=caption_max_new_tokens,
            answer_max_new_tokens=answer_max_new_tokens,
        )
        raw = await self._invoke(body)
        try:
            return vision_contract.parse_response(raw, questions, default_model=self.name)
        except vision_contract.MalformedVisionResponse as exc:
            raise VisionModelError("The vision model returned a malformed response.") from exc

    async def check(self) -> None:
        """Return when the endpoint can serve; raise `NotReady` otherwise."""
        await self._readiness()

    async def _invoke(self, body: bytes) -> bytes:
        def invoke() -> bytes:
            response = self._runtime.invoke_endpoint(
                EndpointName=self._endpoint_name,
                ContentType="application/json",
                Accept="application/json",
                Body=body,
            )
            # Read here, in the worker thread: the body streams from the socket under the read timeout.
            return response["Body"].read()

        attempt = 1
        while True:
            try:
                return await anyio.to_thread.run_sync(invoke)
            except ClientError as exc:
                code = error_code(exc)
                if attempt >= self._max_attempts or code not in RETRYABLE_CODES:
                    raise map_invoke_error(exc) from exc
                delay = self._backoff_s(attempt)
                log.warning("vision_invoke_retry", code=code, attempt=attempt, delay_s=round(delay, 3))
            except BotoCoreError as exc:
                raise map_invoke_error(exc) from exc
            await anyio.sleep(delay)
            attempt += 1

    def _backoff_s(self, attempt: int) -> float:
        """Return the pause after failed attempt `attempt` (1-based): capped exponential, half jittered."""
        ceiling = min(self._backoff_cap_s, self._backoff_base_s * 2.0 ** (attempt - 1))
        # Jitter spreads the retries of many tasks throttled at the same moment; not security-relevant.
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311


def map_invoke_error(exc: BotoCoreError | ClientError) -> AppError:
    """Translate an `InvokeEndpoint` failure into the `AppError` a client may see."""
    if isinstance(exc, ReadTimeoutError | ConnectTimeoutError):
        return UpstreamTimeout("The vision model did not answer in time.")
    if isinstance(exc, ClientError):
        code = error_code(exc)
        if code == "ModelError":
            # The model container answered with an error; its message stays in the exception chain.
            return VisionModelError()
        if code in UNAVAILABLE_CODES or (code == "ValidationError" and _endpoint_missing(exc)):
            return UpstreamUnavailable("The vision model is unavailable; retry later.")
        return VisionModelError()
    # EndpointConnectionError, a dropped connection, credentials that could not be fetched.
    return UpstreamUnavailable("The vision model is unavailable; retry later.")


def _endpoint_missing(exc: ClientError) -> bool:
    # SageMaker says "Endpoint blip2-endpoint of account 123456789012 not found."
    message = str(exc.response.get("Error", {}).get("Message", ""))
    return message.startswith("Endpoint ") and "not found" in message


class PingReadiness:
    """Ready when a local model server answers `GET {base_url}/ping` with 200."""

    def __init__(self, base_url: str, http: httpx.AsyncClient, *, timeout_s: float = 2.0) -> None:
        self._url = f"{base_url.rstrip('/')}/ping"
        self._http = http
        self._timeout_s = timeout_s

    async def __call__(self) -> None:
        try:
            response = await self._http.get(self._url, timeout=self._timeout_s)
        except httpx.HTTPError as exc:
            raise NotReady("The vision model server is not reachable.") from exc
        if response.status_code != 200:
            raise NotReady("The vision model server is not ready.")


class EndpointStatusReadiness:
    """Ready when `DescribeEndpoint` says the endpoint serves; a success is trusted for `ttl_s`."""

    def __init__(self, client: SageMakerClient, endpoint_name: str, *, ttl_s: float = 30.0) -> None:
        self._client = client
        self._endpoint_name = endpoint_name
        # DescribeEndpoint has a low request quota; every task polls /readyz every few seconds.
        self._ttl_s = ttl_s
        self._ready_until = float("-inf")

    async def __call__(self) -> None:
        if time.monotonic() < self._ready_until:
            return
        try:
            # abandon_on_cancel: /readyz's deadline answers at once even while botocore retries.
            described = await anyio.to_thread.run_sync(
                lambda: self._client.describe_endpoint(EndpointName=self._endpoint_name), abandon_on_cancel=True
            )
        except (BotoCoreError, ClientError) as exc:
            raise NotReady("The vision model endpoint cannot be described.") from exc
        if described["EndpointStatus"] not in SERVING_STATUSES:
            raise NotReady("The vision model endpoint is not in service.")
        self._ready_until = time.monotonic() + self._ttl_s
