"""One thread for every torch call in a process: where the model is loaded and where it runs.

torch keeps state per calling thread: on CPU each thread that runs an op gets its own OpenMP
team. Once two threads have both run torch ops, their teams spin against each other on the same
cores, and every later call is slower: on this project's 2-core machine `predict_fn` went from
19 ms to 58 ms (main thread, then a worker thread, then the main thread again). Worker pools
such as `asyncio.to_thread` or anyio's hand each call to whichever thread is free, so the model
gets a single thread of its own instead, which also makes calls run one at a time.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor


def model_thread() -> ThreadPoolExecutor:
    """Return a one-thread executor to load the model on and run every call of it."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
