"""Requests on the model one at a time, with a bounded queue that says "busy" when full.

One worker thread runs the jobs in arrival order (the models are loaded once and are not
shared between threads); at most ``capacity`` jobs are held at once, the running one
included. A job that does not fit is refused at once with :class:`Busy`, so a client is
never left hanging behind an ever-growing queue.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

BUSY_MESSAGE = "busy, try again"


class Busy(RuntimeError):
    """The queue is full: ask again later."""

    def __init__(self) -> None:
        super().__init__(BUSY_MESSAGE)


class RequestQueue:
    """``submit(fn, *args)`` → a Future, or :class:`Busy` when ``capacity`` jobs are held."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"the queue must hold at least 1 request, got {capacity}")
        self.capacity = capacity
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="speak")
        self._lock = threading.Lock()
        self._held = 0
        self._running = False
        self.done = 0
        self.refused = 0

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        with self._lock:
            if self._held >= self.capacity:
                self.refused += 1
                raise Busy
            self._held += 1

        def run() -> Any:
            with self._lock:
                self._running = True
            try:
                return fn(*args)
            finally:
                with self._lock:
                    self._running, self._held = False, self._held - 1
                    self.done += 1

        return self._executor.submit(run)

    def status(self) -> dict[str, Any]:
        """``running`` (a job on the model now), ``waiting`` (behind it), ``capacity``,
        ``done`` and ``refused`` (since start)."""
        with self._lock:
            return {
                "running": self._running,
                "waiting": self._held - int(self._running),
                "capacity": self.capacity,
                "done": self.done,
                "refused": self.refused,
            }

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
