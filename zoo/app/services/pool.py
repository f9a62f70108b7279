"""The worker pool the application predicts in: a bounded number of threads, a bounded queue, a time limit."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

__all__ = ["Busy", "InferencePool"]


class Busy(RuntimeError):
    """The pool's queue is full (the server answers 503)."""


class InferencePool:
    """A bounded worker pool: ``workers`` threads run requests, at most ``queue`` more wait; beyond that
    :class:`Busy`. ``run`` waits at most ``timeout`` seconds (``asyncio.TimeoutError``; the work itself
    finishes in its thread and frees its slot)."""

    def __init__(self, workers: int = 2, queue: int = 8, timeout: float = 120.0):
        if workers < 1 or queue < 0 or timeout <= 0:
            raise ValueError(f"pool: workers >= 1, queue >= 0, timeout > 0; got {workers}, {queue}, {timeout}")
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="zoo-serve")
        self.limit, self.timeout = workers + queue, float(timeout)
        self._pending, self._lock = 0, threading.Lock()

    @property
    def pending(self) -> int:
        return self._pending

    def _release(self, _future=None):
        with self._lock:
            self._pending -= 1

    async def run(self, fn, *args, **kwargs):
        with self._lock:
            if self._pending >= self.limit:
                raise Busy(f"the server is busy ({self._pending} requests running or queued); retry shortly")
            self._pending += 1
        try:
            future = self.executor.submit(fn, *args, **kwargs)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(self._release)
        return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout)

    def close(self):
        self.executor.shutdown(wait=False, cancel_futures=True)
