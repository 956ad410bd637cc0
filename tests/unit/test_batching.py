"""model.batching.DynamicBatcher with a recording `process`: batch sizes, waits, failures, shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Sequence

import pytest

from model.batching import DynamicBatcher


class Recorder:
    """A `process` that doubles numbers, records each batch, and can be held or told to fail."""

    def __init__(self, *, poison: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.poison = poison
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.started.set()
        self.gate.wait(timeout=5)
        self.batches.append(list(items))
        if self.poison in items:
            raise ValueError(f"cannot process {self.poison}")
        return [2 * item for item in items]


@pytest.fixture
async def make() -> AsyncIterator[type[DynamicBatcher[int, int]]]:
    started: list[DynamicBatcher[int, int]] = []

    class Started(DynamicBatcher[int, int]):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            self.start()
            started.append(self)

    yield Started
    for batcher in started:
        await batcher.aclose()


async def test_concurrent_requests_share_one_call_and_each_gets_its_own_result(make: type) -> None:
    recorder = Recorder()
    batcher = make(recorder, max_batch_size=8, max_wait_ms=200)
    results = await asyncio.gather(*(batcher.submit(n) for n in range(5)))
    assert results == [0, 2, 4, 6, 8]
    assert recorder.batches == [[0, 1, 2, 3, 4]]
    assert batcher.stats.batches == 1
    assert batcher.stats.requests == 5


async def test_a_full_batch_leaves_without_waiting_and_the_rest_follow(make: type) -> None:
    recorder = Recorder()
    # The wait is far longer than the test may take: only a full batch can start the first call.
    batcher = make(recorder, max_batch_size=3, max_wait_ms=60_000)
    first = [asyncio.ensure_future(batcher.submit(n)) for n in range(3)]
    assert await asyncio.wait_for(asyncio.gather(*first), timeout=5) == [0, 2, 4]
    assert recorder.batches == [[0, 1, 2]]


async def test_a_lone_request_waits_only_max_wait_for_company(make: type) -> None:
    recorder = Recorder()
    batcher = make(recorder, max_batch_size=8, max_wait_ms=30)
    started = time.perf_counter()
    assert await asyncio.wait_for(batcher.submit(7), timeout=5) == 14
    waited = time.perf_counter() - started
    assert recorder.batches == [[7]]
    assert waited >= 0.03  # it did wait for company...
    assert waited < 1.0  # ...but not for a full batch


async def test_requests_queued_behind_a_busy_model_go_together_once_it_frees(make: type) -> None:
    recorder = Recorder()
    recorder.gate.clear()
    batcher = make(recorder, max_batch_size=4, max_wait_ms=0)
    first = asyncio.ensure_future(batcher.submit(1))
    await asyncio.to_thread(recorder.started.wait, 5)  # the model is busy with [1]
    later = [asyncio.ensure_future(batcher.submit(n)) for n in (2, 3, 4, 5, 6)]
    await asyncio.sleep(0.05)
    recorder.gate.set()
    assert await first == 2
    assert await asyncio.gather(*later) == [4, 6, 8, 10, 12]
    # No waiting (max_wait 0) yet full batches: what queued meanwhile is already due.
    assert recorder.batches == [[1], [2, 3, 4, 5], [6]]


async def test_one_failing_request_does_not_fail_its_batch(make: type) -> None:
    recorder = Recorder(poison=3)
    batcher = make(recorder, max_batch_size=8, max_wait_ms=100)
    results = await asyncio.gather(*(batcher.submit(n) for n in (1, 3, 5)), return_exceptions=True)
    assert results[0] == 2
    assert results[2] == 10
    assert isinstance(results[1], ValueError)
    assert recorder.batches == [[1, 3, 5], [1], [3], [5]]  # the batch, then each alone


async def test_a_wrong_number_of_results_is_an_error_not_a_mixup(make: type) -> None:
    batcher = make(lambda items: [0], max_batch_size=8, max_wait_ms=100)
    results = await asyncio.gather(*(batcher.submit(n) for n in (1, 2)), return_exceptions=True)
    assert results == [0, 0]  # each retried alone, where one result per request is right
    lone = make(lambda items: [], max_batch_size=1, max_wait_ms=0)
    with pytest.raises(RuntimeError, match="0 results for 1"):
        await lone.submit(1)


async def test_closing_fails_what_is_queued_or_running() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    batcher: DynamicBatcher[int, int] = DynamicBatcher(recorder, max_batch_size=1, max_wait_ms=0)
    batcher.start()
    running = asyncio.ensure_future(batcher.submit(1))
    await asyncio.to_thread(recorder.started.wait, 5)
    queued = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0.01)
    await batcher.aclose()
    recorder.gate.set()
    for request in (running, queued):
        with pytest.raises(RuntimeError, match="shutting down"):
            await request


async def test_submit_before_start_is_a_programming_error() -> None:
    batcher: DynamicBatcher[int, int] = DynamicBatcher(Recorder(), max_batch_size=2, max_wait_ms=1)
    with pytest.raises(RuntimeError, match="start"):
        await batcher.submit(1)


@pytest.mark.parametrize(("size", "wait"), [(0, 1.0), (1, -1.0)])
def test_nonsense_settings_are_refused(size: int, wait: float) -> None:
    with pytest.raises(ValueError, match="max_"):
        DynamicBatcher(Recorder(), max_batch_size=size, max_wait_ms=wait)
