"""Dynamic batching: gather concurrent requests into one model call, waiting at most `max_wait_ms`.

A GPU decoding one prompt reads all of the language model's weights per token; decoding 32
prompts reads them once too. So requests that arrive together are worth serving together:
`DynamicBatcher.submit` parks a request, and one dispatcher task hands batches to `process`, on
the model's own thread (`model.thread`), one batch at a time.

The rule for a batch: it starts when it holds `max_batch_size` requests, or when its oldest
request has waited `max_wait_ms`, whichever comes first. While the model is busy, new requests
queue; when it frees, a batch whose oldest request has already waited long enough leaves at once
with whatever is queued. So no request ever waits longer than `max_wait_ms` *for company*; it
may wait longer for the model, as it would without batching.

If a batch fails, each of its requests is retried alone, so one poisoned request cannot fail
its neighbours; a request that fails alone gets its own exception.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from model.thread import model_thread

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)

SHUTTING_DOWN = "the model server is shutting down"


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    """What the batcher has done so far: for logs, benchmarks and tests."""

    batches: int = 0
    requests: int = 0
    largest: int = 0
    sizes: Counter[int] = field(default_factory=Counter)  # batch size -> how many batches had it


class DynamicBatcher(Generic[T, R]):
    """Serve `submit(item)` calls through `process(items) -> results`, batching concurrent ones."""

    def __init__(
        self,
        process: Callable[[Sequence[T]], list[R]],
        *,
        max_batch_size: int,
        max_wait_ms: float,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must not be negative")
        self._process = process
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Pending[T, R]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        # Batches run on the model's own thread (see model.thread), given or made here.
        self._owns_worker = executor is None
        self._worker = executor or model_thread()

    def start(self) -> None:
        """Start the dispatcher on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._dispatch(), name="dynamic-batcher")

    async def aclose(self) -> None:
        """Stop the dispatcher; requests queued or running fail with `RuntimeError`."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._owns_worker:
            self._worker.shutdown(wait=False)
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(RuntimeError(SHUTTING_DOWN))

    async def submit(self, item: T) -> R:
        """Queue one request and return its result once its batch has run."""
        if self._task is None:
            raise RuntimeError("DynamicBatcher.start() was not called")
        pending: _Pending[T, R] = _Pending(item, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(pending)
        return await pending.future

    async def _dispatch(self) -> None:
        while True:
            batch = await self._collect()
            batch = [p for p in batch if not p.future.done()]  # callers that gave up
            if batch:
                await self._run(batch)

    async def _collect(self) -> list[_Pending[T, R]]:
        """Wait for a first request, then for company until the batch is full or the oldest is due."""
        batch = [await self._queue.get()]
        deadline = batch[0].enqueued + self.max_wait_s
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _run(self, batch: list[_Pending[T, R]]) -> None:
        started = time.perf_counter()
        items = [p.item for p in batch]
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._worker, self._process, items)
            if len(results) != len(batch):
                raise RuntimeError(f"process returned {len(results)} results for {len(batch)} requests")
        except asyncio.CancelledError:  # aclose() while the model runs: nobody will settle these later
            for pending in batch:
                _settle(pending, RuntimeError(SHUTTING_DOWN))
            raise
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0], exc)
                return
            log.warning("batch of %d failed (%r); retrying each request alone", len(batch), exc)
            for pending in batch:
                await self._run([pending])
            return
        self._record(len(batch))
        log.debug(
            "batch size=%d oldest_wait_ms=%.1f run_ms=%.1f",
            len(batch),
            (started - batch[0].enqueued) * 1000,
            (time.perf_counter() - started) * 1000,
        )
        for pending, result in zip(batch, results, strict=True):
            _settle(pending, result)

    def _record(self, size: int) -> None:
        self.stats.batches += 1
        self.stats.requests += size
        self.stats.largest = max(self.stats.largest, size)
        self.stats.sizes[size] += 1


def _settle(pending: _Pending[T, R], outcome: R | BaseException) -> None:
    if pending.future.done():
        return
    if isinstance(outcome, BaseException):
        pending.future.set_exception(outcome)
    else:
        pending.future.set_result(outcome)
