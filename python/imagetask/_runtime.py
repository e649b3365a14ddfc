"""Running work off the caller's thread: coroutines on a background event loop, blocking
calls on daemon worker threads."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["BackgroundLoop", "CallDispatcher", "Workers"]

T = TypeVar("T")


async def _cancel_all() -> None:
    """Cancels every other task of the running loop and waits until they have ended."""
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class BackgroundLoop:
    """An event loop on a daemon thread of its own, started on first use.

    `run` works from plain code, from inside a running event loop (Jupyter, an async web
    app) and from several threads at once; clients bound to a loop stay on this one.
    Several users (runs in threads) may share it: each `acquire`s it and `release`s it
    when done, and only the last release closes it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._users = 0

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="imagetask-loop", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    @property
    def started(self) -> bool:
        """Whether the loop's thread is running."""
        return self._loop is not None

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Runs `coroutine` on the background loop and waits for its result.

        Raises `concurrent.futures.CancelledError` when `close` cancels it.
        """
        loop = self._ensure()
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("BackgroundLoop.run called from its own loop; await instead")
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

    def acquire(self) -> None:
        """Counts one more user: the loop stays open until every user has released it."""
        with self._lock:
            self._users += 1

    def release(self, cleanup: Callable[[], Awaitable[None]] | None = None) -> None:
        """One user is done: the last one (or a caller that never acquired the loop)
        closes it as `close` does; before that, the other users' requests go on."""
        with self._lock:
            if self._users > 1:
                self._users -= 1
                return
            self._users = 0
        self.close(cleanup)

    def close(self, cleanup: Callable[[], Awaitable[None]] | None = None) -> None:
        """Cancels every task still on the loop and waits for them (their callers in
        `run` get `CancelledError` at once), awaits `cleanup()` (closing clients), then
        stops the loop and its thread; a later `run` starts them again."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return

        async def finish() -> None:
            await _cancel_all()
            if cleanup is not None:
                await cleanup()
            await loop.shutdown_asyncgens()

        try:
            asyncio.run_coroutine_threadsafe(finish(), loop).result()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()


def _run(future: Future[Any], call: Callable[[], Any]) -> None:
    """Runs `call` unless `future` was cancelled, handing `future` what it returns or
    raises."""
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = call()
    except BaseException as exc:  # handed to the caller, whatever it is
        future.set_exception(exc)
    else:
        future.set_result(result)


class Workers:
    """Daemon threads that run submitted calls in order of submission.

    Unlike `ThreadPoolExecutor`'s threads, they are not joined when the interpreter
    exits: a call that never returns (a hung backend) cannot keep the process alive after
    Ctrl-C.
    """

    def __init__(self, count: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{index}", daemon=True)
            for index in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            _run(*job)
            # Not kept while waiting for the next job: a batch's answers go with it.
            del job

    def submit(self, call: Callable[[], T]) -> Future[T]:
        """Queues `call`; its future holds what it returns or raises."""
        future: Future[T] = Future()
        self._jobs.put((future, call))
        return future

    def shutdown(self) -> None:
        """Cancels the calls not started yet and lets the threads end after their
        current call (without waiting for it)."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].cancel()
        for _ in self._threads:
            self._jobs.put(None)


class CallDispatcher:
    """Runs calls on `workers`, or on the calling thread while they are quick: once a
    call took under `quick_seconds`, the next one runs in place (handing a call that
    short to a thread and back costs more than the call), until one takes longer.

    A call run in place hands what it returns, or whatever it raises (`KeyboardInterrupt`
    included), to its future, as a worker does: the caller meets it where it waits for
    that call's result, after the calls before it.
    """

    def __init__(self, workers: Workers, quick_seconds: float) -> None:
        self._workers = workers
        self._quick_seconds = quick_seconds
        self._quick = False

    def submit(self, call: Callable[[], T]) -> Future[T]:
        """Runs `call`, in place or on a worker; its future holds what it returns or raises."""
        if not self._quick:
            return self._workers.submit(lambda: self._timed(call))
        future: Future[T] = Future()
        _run(future, lambda: self._timed(call))
        return future

    def _timed(self, call: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return call()
        finally:
            self._quick = time.perf_counter() - started < self._quick_seconds
