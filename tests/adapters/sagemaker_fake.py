"""A loopback fake of the SageMaker Runtime REST API, for real botocore over real HTTP.

What the real service (and `python -m model.serve`, which must copy it) does on the wire:

- `POST /endpoints/{EndpointName}/invocations`, SigV4-signed (signing name `sagemaker`), with the
  request's `Content-Type` and `Accept` headers and the body passed through unchanged. Success is
  `200` with the model's body and its `Content-Type`.
- Errors are rest-json: a status code, the header `x-amzn-ErrorType: <Code>` (botocore reads the
  code from it, cutting anything after a `:`), and a JSON body whose `Message` botocore reads:
  - `ModelError` (424) when the model container answered 4xx/5xx; the body also carries
    `OriginalStatusCode`, `OriginalMessage` (the container's body), `LogStreamArn` and `ErrorCode`.
  - `ThrottlingException` (400), `ServiceUnavailable` (503), `ModelNotReadyException` (429),
    `InternalFailure` (500), `ValidationError` (400; `Endpoint {name} of account {id} not found.`
    for a missing endpoint).
- `GET /ping` is not part of the Runtime API; the SageMaker container contract serves it, and so
  does `python -m model.serve`: `200` when the model is loaded.

Requests are recorded; replies are queued (`FakeSageMakerRuntime.replies`) and, once the queue
is empty, a contract-shaped success echoing the questions is sent.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ERROR_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.sagemaker/"


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0

    @classmethod
    def ok(cls, payload: dict[str, Any]) -> Reply:
        return cls(200, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    @classmethod
    def raw(cls, body: bytes, content_type: str = "application/json") -> Reply:
        return cls(200, body, {"Content-Type": content_type})

    @classmethod
    def error(cls, status: int, code: str, message: str, **extra: Any) -> Reply:
        body = json.dumps({"Message": message, **extra}).encode()
        headers = {"Content-Type": "application/json", "x-amzn-ErrorType": f"{code}:{ERROR_NAMESPACE}"}
        return cls(status, body, headers)

    @classmethod
    def model_error(cls, original_status: int = 500, original_message: str = "CUDA out of memory") -> Reply:
        return cls.error(
            424,
            "ModelError",
            f'Received server error ({original_status}) from primary with message "{original_message}".',
            ErrorCode="INTERNAL_FAILURE_FROM_MODEL",
            OriginalStatusCode=original_status,
            OriginalMessage=original_message,
            LogStreamArn="arn:aws:logs:ca-central-1:123456789012:log-group:/aws/sagemaker/Endpoints/blip2-endpoint",
        )

    @classmethod
    def throttling(cls) -> Reply:
        return cls.error(400, "ThrottlingException", "Rate exceeded")

    @classmethod
    def service_unavailable(cls) -> Reply:
        return cls.error(503, "ServiceUnavailable", "Service is unavailable. Try again later.")

    @classmethod
    def model_not_ready(cls) -> Reply:
        return cls.error(429, "ModelNotReadyException", "Model is not ready yet.")

    @classmethod
    def endpoint_not_found(cls, endpoint: str) -> Reply:
        return cls.error(400, "ValidationError", f"Endpoint {endpoint} of account 123456789012 not found.")

    @classmethod
    def validation(cls, message: str) -> Reply:
        return cls.error(400, "ValidationError", message)

    @classmethod
    def slow(cls, delay_s: float) -> Reply:
        return cls(200, b"{}", {"Content-Type": "application/json"}, delay_s)


def contract_reply(request: Recorded, *, model: str = "blip2-test") -> Reply:
    """Answer a vision-contract request: a caption and one answer per question, in order."""
    questions = request.json()["questions"]
    answers = [{"question": q, "answer": f"answer {i}"} for i, q in enumerate(questions)]
    return Reply.ok(
        {
            "model": model,
            "caption": "a red leather handbag on a table",
            "answers": answers,
            "timings_ms": {"preprocess": 1.0, "generate": 2.0},
        }
    )


class FakeSageMakerRuntime:
    """The fake server's state: what it received and what it will answer next."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.replies: deque[Reply] = deque()
        self.ping_status = 200
        self.url = ""
        self._lock = threading.Lock()
        self.stopping = threading.Event()

    def invocations(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/invocations")]

    def handle(self, request: Recorded) -> Reply:
        with self._lock:
            self.requests.append(request)
            if request.method == "GET" and request.path == "/ping":
                return Reply(self.ping_status, b"{}", {"Content-Type": "application/json"})
            if request.method != "POST" or not request.path.startswith("/endpoints/"):
                return Reply.error(404, "UnknownOperationException", "Unknown operation")
            queued = self.replies.popleft() if self.replies else None
        return queued if queued is not None else contract_reply(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self.server.fake.handle(Recorded(self.command, self.path, headers, body))
        if reply.delay_s:
            # Wait on the stop event, so that closing the fake never waits out a slow reply.
            self.server.fake.stopping.wait(reply.delay_s)
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("x-amzn-RequestId", "00000000-0000-0000-0000-000000000000")
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up first (a read timeout); that is the point of a slow reply

    do_GET = _serve
    do_POST = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeSageMakerRuntime) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


@contextmanager
def running_fake() -> Iterator[FakeSageMakerRuntime]:
    """Serve a fresh fake on 127.0.0.1 on a free port, in a thread, for the duration of the block."""
    fake = FakeSageMakerRuntime()
    server = _Server(fake)
    fake.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
