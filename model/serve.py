"""Local SageMaker-compatible model server, with dynamic batching across concurrent requests.

    python -m model.serve --model-dir DIR --port 8081 [--max-batch-size 8] [--max-wait-ms 5]

It speaks two dialects over the same `model/code/inference.py` functions SageMaker calls:

- the SageMaker **container** contract: `GET /ping` (200 once the model is loaded, 503 before)
  and `POST /invocations` (the model's own answer, or `{"error": ...}` with a 4xx/5xx status);
- the SageMaker **Runtime API**: `POST /endpoints/{name}/invocations`, answering the way the real
  service does, so that boto3's `sagemaker-runtime` client with `endpoint_url=` (the app's
  `SAGEMAKER_RUNTIME_URL`) works unchanged. A container error comes back as the service's
  `ModelError` (424, `x-amzn-ErrorType`, `OriginalStatusCode`, `OriginalMessage`); an unknown
  endpoint name as `ValidationError`; a model still loading as `ModelNotReadyException`.

The model loads on its own thread (`model.thread`) after the server starts listening, so `/ping`
can say 503 meanwhile. Requests are decoded (`input_fn`, Pillow only) concurrently in threads,
then batched by `model.batching.DynamicBatcher` into `predict_batch` calls on the model's thread. The server does not
check SigV4 signatures: it is for loopback and for a private GPU box, never the internet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from model.batching import DynamicBatcher
from model.code import inference
from model.thread import model_thread

log = logging.getLogger("model.serve")

DEFAULT_ENDPOINT_NAME = "blip2-endpoint"
DEFAULT_MAX_BATCH_SIZE = 8
DEFAULT_MAX_WAIT_MS = 5.0
# SageMaker real-time endpoints accept payloads up to 25 MB; the app sends about 20 kB.
MAX_BODY_BYTES = 25 * 1024 * 1024
LOCAL_ACCOUNT_ID = "000000000000"
VARIANT_NAME = "AllTraffic"
ERROR_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.sagemaker/"

Loader = Callable[[], inference.LoadedModel]


@dataclass(frozen=True)
class Answer:
    """What the container says to one invocation: status, body and content type."""

    status: int
    body: bytes
    content_type: str = inference.JSON_TYPE

    @classmethod
    def error(cls, status: int, message: str) -> Answer:
        return cls(status, json.dumps({"error": message}).encode())


class ModelServer:
    """The model, its loading state and its batcher; the HTTP routes only translate."""

    def __init__(
        self,
        load: Loader,
        *,
        endpoint_name: str = DEFAULT_ENDPOINT_NAME,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
        on_load_failure: Callable[[BaseException], None] | None = None,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.endpoint_name = endpoint_name
        self._owns_thread = executor is None
        self._model_thread = executor or model_thread()  # loads the model and runs every batch
        self.loaded: inference.LoadedModel | None = None
        self.load_error: BaseException | None = None
        self.ready = asyncio.Event()  # set once the model is loaded
        self.batcher: DynamicBatcher[inference.VisionRequest, dict[str, Any]] = DynamicBatcher(
            self._predict, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, executor=self._model_thread
        )
        self._load = load
        self._on_load_failure = on_load_failure
        self._load_task: asyncio.Task[None] | None = None

    def _predict(self, requests: Sequence[inference.VisionRequest]) -> list[dict[str, Any]]:
        assert self.loaded is not None  # invoke() refuses requests until the model is loaded
        return inference.predict_batch(requests, self.loaded)

    async def start(self) -> None:
        """Start the batcher and load the model in the background."""
        self.batcher.start()
        self._load_task = asyncio.get_running_loop().create_task(self._load_model(), name="load-model")

    async def stop(self) -> None:
        if self._load_task is not None:
            self._load_task.cancel()
            await asyncio.gather(self._load_task, return_exceptions=True)
        await self.batcher.aclose()
        if self._owns_thread:
            self._model_thread.shutdown(wait=False)

    async def _load_model(self) -> None:
        try:
            self.loaded = await asyncio.get_running_loop().run_in_executor(self._model_thread, self._load)
        except Exception as exc:
            self.load_error = exc
            log.exception("model failed to load")
            if self._on_load_failure is not None:
                self._on_load_failure(exc)
            return
        self.ready.set()
        log.info("model %s loaded on %s (%s)", self.loaded.name, self.loaded.device, self.loaded.dtype)

    async def invoke(self, body: bytes, content_type: str, accept: str) -> Answer:
        """Serve one invocation the way SageMaker's container would."""
        if self.loaded is None:
            return Answer.error(503, "the model is not loaded yet")
        if not inference.accepts(accept):
            return Answer.error(406, "cannot answer in that representation; accept application/json")
        try:
            request = await asyncio.to_thread(inference.input_fn, body, content_type)
        except inference.InvalidInput as exc:
            return Answer.error(exc.status_code, str(exc))
        try:
            prediction = await self.batcher.submit(request)
        except Exception:
            log.exception("prediction failed")
            return Answer.error(500, "the model failed on this request")
        payload, produced_type = inference.output_fn(prediction, accept)
        return Answer(200, payload, produced_type)


def create_app(server: ModelServer) -> Starlette:
    """Build the HTTP app around a `ModelServer`."""

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    async def ping(_: Request) -> Response:
        if server.loaded is not None:
            return JSONResponse({"status": "ok", "model": server.loaded.name})
        status = "failed" if server.load_error is not None else "loading"
        return JSONResponse({"status": status}, status_code=503)

    async def invocations(request: Request) -> Response:
        body = await _read_body(request)
        if body is None:
            answer = Answer.error(413, f"the body is over {MAX_BODY_BYTES} bytes")
        else:
            answer = await server.invoke(body, *_content_headers(request))
        return Response(answer.body, status_code=answer.status, media_type=answer.content_type)

    async def runtime_invocations(request: Request) -> Response:
        name = request.path_params["name"]
        if name != server.endpoint_name:
            return _runtime_error(400, "ValidationError", f"Endpoint {name} of account {LOCAL_ACCOUNT_ID} not found.")
        if server.loaded is None:
            return _runtime_error(429, "ModelNotReadyException", "Model for endpoint is not ready to serve requests.")
        body = await _read_body(request)
        if body is None:
            return _runtime_error(413, "ValidationError", f"Request payload exceeds {MAX_BODY_BYTES} bytes.")
        answer = await server.invoke(body, *_content_headers(request))
        if answer.status >= 400:
            return _model_error(answer, name)
        headers = {"x-Amzn-Invoked-Production-Variant": VARIANT_NAME, "x-amzn-RequestId": str(uuid.uuid4())}
        return Response(answer.body, status_code=200, media_type=answer.content_type, headers=headers)

    return Starlette(
        routes=[
            Route("/ping", ping, methods=["GET"]),
            Route("/invocations", invocations, methods=["POST"]),
            Route("/endpoints/{name}/invocations", runtime_invocations, methods=["POST"]),
        ],
        lifespan=lifespan,
    )


async def _read_body(request: Request) -> bytes | None:
    """Read the body, or return None as soon as it grows past `MAX_BODY_BYTES`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _content_headers(request: Request) -> tuple[str, str]:
    return request.headers.get("content-type", ""), request.headers.get("accept", inference.JSON_TYPE)


def _runtime_error(status: int, code: str, message: str, **extra: Any) -> Response:
    """Answer as the SageMaker Runtime service does: rest-json error, code in `x-amzn-ErrorType`."""
    headers = {"x-amzn-ErrorType": f"{code}:{ERROR_NAMESPACE}", "x-amzn-RequestId": str(uuid.uuid4())}
    return JSONResponse({"Message": message, **extra}, status_code=status, headers=headers)


def _model_error(answer: Answer, endpoint_name: str) -> Response:
    """Wrap a container error in the Runtime API's `ModelError`, as SageMaker does (status 424)."""
    original = answer.body.decode("utf-8", errors="replace")
    kind = "client" if answer.status < 500 else "server"
    log_group = f"/aws/sagemaker/Endpoints/{endpoint_name}"
    return _runtime_error(
        424,
        "ModelError",
        f'Received {kind} error ({answer.status}) from primary with message "{original}". '
        f"See the model server's log for more information.",
        OriginalStatusCode=answer.status,
        OriginalMessage=original,
        ErrorCode="CLIENT_ERROR_FROM_MODEL" if kind == "client" else "INTERNAL_FAILURE_FROM_MODEL",
        LogStreamArn=f"arn:aws:logs:local:{LOCAL_ACCOUNT_ID}:log-group:{log_group}",
    )


def _env_number(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m model.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True, help="a BLIP-2 folder (or a hub id, if the hub is reachable)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument(
        "--endpoint-name", default=DEFAULT_ENDPOINT_NAME, help="the name the Runtime API path answers to"
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=int(_env_number("MODEL_MAX_BATCH_SIZE", DEFAULT_MAX_BATCH_SIZE)),
        help="most requests in one model call; 1 turns batching off (env MODEL_MAX_BATCH_SIZE)",
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=_env_number("MODEL_MAX_WAIT_MS", DEFAULT_MAX_WAIT_MS),
        help="longest a request waits for company before its batch starts (env MODEL_MAX_WAIT_MS)",
    )
    parser.add_argument("--device", default=None, help="auto, cpu or cuda (default: MODEL_DEVICE, else auto)")
    parser.add_argument("--dtype", default=None, help="auto, float16, bfloat16 or float32 (default: MODEL_DTYPE)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    if args.max_batch_size < 1:
        parser.error("--max-batch-size must be at least 1")
    if args.max_wait_ms < 0:
        parser.error("--max-wait-ms must not be negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    holder: dict[str, uvicorn.Server] = {}

    def stop_on_failure(_: BaseException) -> None:
        holder["server"].should_exit = True

    server = ModelServer(
        lambda: inference.load_model(args.model_dir, device=args.device, dtype=args.dtype),
        endpoint_name=args.endpoint_name,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        on_load_failure=stop_on_failure,
    )
    config = uvicorn.Config(
        create_app(server),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=20,
    )
    holder["server"] = uvicorn.Server(config)
    holder["server"].run()
    return 1 if server.load_error is not None else 0


if __name__ == "__main__":
    sys.exit(main())
