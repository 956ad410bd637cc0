"""A loopback stand-in for PostHog's capture endpoint (`POST /batch/`), for the real SDK to send to.

It keeps every batch as received (raw bytes too, for tests that grep them), can hold its
answers until told to go on (to prove a request never waits on PostHog), and can fail.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.loopback import serving


@dataclass
class CaptureServer:
    url: str = ""
    raw: list[bytes] = field(default_factory=list)
    batches: list[dict[str, Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)  # cleared: answers wait
    status: int = 200

    def __post_init__(self) -> None:
        self.release.set()
        self._lock = threading.Lock()

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [event for batch in self.batches for event in batch["batch"]]

    def named(self, name: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["event"] == name]

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while len(self.events) < count:
            assert time.monotonic() < deadline, f"{len(self.events)} of {count} events arrived in {timeout_s} s"
            time.sleep(0.02)
        return self.events

    async def _batch(self, request: Request) -> JSONResponse:
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        with self._lock:
            self.raw.append(body)
            self.batches.append(json.loads(body))
        # Wait in a worker thread, so the server itself stays responsive.
        await anyio.to_thread.run_sync(self.release.wait, 30)
        return JSONResponse({"status": "Ok"}, status_code=self.status)


@contextmanager
def posthog_capture() -> Iterator[CaptureServer]:
    server = CaptureServer()
    app = Starlette(routes=[Route("/batch/", server._batch, methods=["POST"])])
    with serving(app) as url:
        server.url = url
        try:
            yield server
        finally:
            server.release.set()
