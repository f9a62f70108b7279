"""The worker pool the application predicts in: a bounded number of workers, a bounded queue, a time limit.

Two kinds of worker, one front: ``workers`` slots (threads) take requests, at most ``queue`` more wait, beyond that
:class:`Busy`. Without ``sources`` a slot runs the request itself, in this process (the models the routes hold).
With ``sources`` (``{name: store name / work directory / export folder}``) each slot hands the request to a worker
*process* (``spawn``, never ``fork``: the parent runs JAX threads) that loaded those models itself at start; a
:class:`~zoo.app.services.served.ServedModel` argument travels by name and the worker uses its own copy. A worker
that dies during a request (a crash, the kernel's OOM killer) is :class:`WorkerLost` and is replaced; a request
past ``timeout`` seconds (queueing included) is ``TimeoutError`` and its worker is killed and replaced, so the
slot is free again. In thread mode the time limit answers the client, but the work finishes in its thread.
A ``spawn``ed worker imports the parent's ``__main__`` module: a script that builds a pool (or an app with
``sources``) must do so under ``if __name__ == "__main__":`` (``python -m zoo.serve`` does).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import multiprocessing
import pickle
import queue as queues
import threading
import time

from zoo.app.services.served import ServedModel

__all__ = ["Busy", "WorkerLost", "InferencePool"]

START_TIMEOUT = 600.0  # seconds a worker process may take to load and compile its models


class Busy(RuntimeError):
    """The pool's queue is full (the server answers 503)."""


class WorkerLost(RuntimeError):
    """The worker process running a request died, or none could be started (the server answers 503)."""


@dataclasses.dataclass(frozen=True)
class _ModelRef:
    """A served model sent to a worker process by name."""

    name: str


def _portable_error(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a ``RuntimeError`` carrying its type and message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _worker_main(conn, sources: dict) -> None:
    """A worker process: load ``sources``, say ready, then run ``(fn, args, kwargs)`` messages until the pipe
    closes; each answer is ``("ok", result)`` or ``("error", exception)``."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C and SIGTERM are the server's to handle; it ends us
    from zoo.app.services.loading import load_model

    try:
        models = {}
        for name, source in sources.items():
            models[name] = load_model(source)
            models[name].name = name
    except Exception as e:
        conn.send(("failed", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            fn, args, kwargs = pickle.loads(payload)  # e.g. a function this process cannot import: an answer
            args = [models[a.name] if isinstance(a, _ModelRef) else a for a in args]
            answer = ("ok", fn(*args, **kwargs))
        except Exception as e:
            answer = ("error", _portable_error(e))
        try:
            conn.send(answer)
        except Exception as e:  # an unpicklable result
            conn.send(("error", RuntimeError(f"the worker's answer could not be sent back ({e})")))


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, sources: dict):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, sources), daemon=True,
                                   name="zoo-serve-worker")
        self.process.start()
        child.close()

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float) -> str | None:
        """``None`` once the worker has loaded its models, else why it did not."""
        try:
            if not self.conn.poll(timeout):
                return f"a worker did not load its models within {timeout:g} s"
            kind, detail = self.conn.recv()
        except (EOFError, OSError):
            return f"a worker exited while loading its models (exit code {self.process.exitcode})"
        return None if kind == "ready" else f"a worker could not load its models: {detail}"

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()


class InferencePool:
    """A bounded worker pool (see the module docstring): ``workers`` slots, at most ``queue`` more waiting, then
    :class:`Busy`; ``timeout`` seconds per request; worker processes loading ``sources`` when given."""

    def __init__(self, workers: int = 2, queue: int = 8, timeout: float = 120.0, sources: dict | None = None):
        if workers < 1 or queue < 0 or timeout <= 0:
            raise ValueError(f"pool: workers >= 1, queue >= 0, timeout > 0; got {workers}, {queue}, {timeout}")
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="zoo-serve")
        self.workers, self.limit, self.timeout = workers, workers + queue, float(timeout)
        self.sources = dict(sources) if sources else None
        self._pending, self._lock = 0, threading.Lock()
        self._idle: queues.Queue = queues.Queue()
        self._workers: set = set()
        self._failure: str | None = None
        self._closed = False
        if self.sources is not None:
            for _ in range(workers):
                self._spawn()

    @property
    def pending(self) -> int:
        """Requests running or waiting."""
        return self._pending

    @property
    def ready(self) -> int:
        """Worker processes loaded and idle (thread mode: the number of workers)."""
        return self._idle.qsize() if self.sources is not None else self.workers

    @property
    def processes(self) -> list[int]:
        """The process ids of the live worker processes (empty in thread mode)."""
        with self._lock:
            return sorted(w.pid for w in self._workers if w.process.is_alive())

    def _spawn(self) -> None:
        """Start a worker process; a background thread puts it among the idle ones once its models are loaded."""
        def start():
            if self._closed:
                return
            w = _Worker(self.sources)
            with self._lock:
                self._workers.add(w)
            why = w.wait_ready(START_TIMEOUT)
            if why is None and not self._closed:
                self._idle.put(w)
                return
            self._retire(w)
            if why is not None:
                self._failure = why
                self._idle.put(None)  # wakes one waiting request, which reports the failure

        threading.Thread(target=start, name="zoo-serve-spawn", daemon=True).start()

    def _retire(self, w: _Worker) -> None:
        w.kill()
        with self._lock:
            self._workers.discard(w)

    def _in_worker(self, deadline: float, fn, args, kwargs):
        """Run one request in an idle worker process before ``deadline`` (``time.monotonic``)."""
        try:
            w = self._idle.get(timeout=max(deadline - time.monotonic(), 0.0))
        except queues.Empty:
            raise TimeoutError("no worker became free in time") from None
        if w is None:
            self._idle.put(None)
            raise WorkerLost(f"no worker process is available: {self._failure}")
        try:
            payload = pickle.dumps((fn, tuple(_ModelRef(a.name) if isinstance(a, ServedModel) else a for a in args),
                                    kwargs))
        except Exception as e:  # nothing was sent: the worker is still free
            self._idle.put(w)
            raise RuntimeError(f"the request cannot be sent to a worker process ({type(e).__name__}: {e})") from None
        try:
            w.conn.send_bytes(payload)
            answered = w.conn.poll(max(deadline - time.monotonic(), 0.0))
            if answered:
                kind, value = w.conn.recv()
        except (EOFError, OSError):  # the pipe's other end is gone: the process died
            w.process.join(1)
            code = w.process.exitcode
            self._retire(w)
            self._spawn()
            raise WorkerLost(f"the worker process died during the request (exit code {code}); it is being "
                             f"restarted, retry shortly") from None
        if not answered:
            self._retire(w)  # the only way to stop a computation: end its process
            self._spawn()
            raise TimeoutError("the request ran past its time limit; its worker was restarted")
        self._idle.put(w)
        if kind == "error":
            raise value
        return value

    def _release(self, _future=None):
        with self._lock:
            self._pending -= 1

    async def run(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` in a worker: :class:`Busy` when ``workers + queue`` requests are already in,
        ``TimeoutError`` past the time limit, :class:`WorkerLost` when its worker process died."""
        with self._lock:
            if self._pending >= self.limit:
                raise Busy(f"the server is busy ({self._pending} requests running or queued); retry shortly")
            self._pending += 1
        try:
            if self.sources is None:
                future = self.executor.submit(fn, *args, **kwargs)
            else:
                deadline = time.monotonic() + self.timeout
                future = self.executor.submit(self._in_worker, deadline, fn, args, kwargs)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(self._release)
        if self.sources is None:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout)
        return await asyncio.wrap_future(future)  # the slot keeps the deadline (and ends the worker past it)

    def close(self):
        """Stop taking work; end the worker processes."""
        self._closed = True
        self.executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            workers = list(self._workers)
        for w in workers:
            self._retire(w)
