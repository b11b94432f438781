"""Worker threads for every stream, units handed back in order, and the main thread's one wait.

Every stream fetches on a :class:`WorkerPool` and hands what finished to the main thread. The
main thread never blocks on one stream's future: it waits in :meth:`RunLoop.wait_for`, which
keeps every started runner fed (finished units taken in, new ones started as the bounds allow)
while it waits for the one it is writing out. So streams selected together fetch side by side
while the SDK writes them out one after another, and a run costs its longest stream.

Runners' bookkeeping runs on the main thread only (``pump``); workers only fetch, parse and
write their own spool files. A pool's shutdown never waits for a worker stuck in a stalled
read: workers check their stop event between chunks, and :func:`workers_finished` bounds how
long the tap waits for them at exit.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, Protocol, TypeVar

#: Every worker thread's name starts with this, whatever its stream.
WORKER_THREAD_PREFIX = "mixpanel-worker"
#: How often a wait looks at stop events when no unit finishes.
POLL_SECONDS = 0.2

T = TypeVar("T")
R = TypeVar("R")


class Runner(Protocol):
    """What the run loop drives: one stream's work in flight."""

    def pump(self) -> None:
        """Take in finished units and start what the bounds allow; never blocks (main thread)."""

    def stop(self) -> None:
        """Start nothing more and abandon what is in flight (safe from a signal handler)."""

    def close(self) -> None:
        """Stop, and drop what is spooled; never waits for a worker."""


class RunLoop:
    """The main thread's one wait, and the one stop switch of every stream of a run."""

    def __init__(self) -> None:
        self._runners: list[Runner] = []
        self._on_stop: list[Callable[[], None]] = []
        #: Set whenever a unit finishes, so a wait wakes at once rather than at its next poll.
        self.wake = threading.Event()
        self.stopped = False
        self._started = False

    @property
    def started(self) -> bool:
        """True once any stream started work (a stop then ends it in order, not at once)."""
        return self._started

    def on_stop(self, stop: Callable[[], None]) -> None:
        """Call ``stop`` when the run stops (at once when it already has)."""
        self._on_stop.append(stop)
        self._started = True
        if self.stopped:
            stop()

    def add(self, runner: Runner) -> None:
        """Drive ``runner`` from now on; stopped at once when the run is already stopping."""
        self._runners.append(runner)
        self._started = True
        if self.stopped:
            runner.stop()

    def remove(self, runner: Runner) -> None:
        """``runner`` is closed: no more pumping."""
        if runner in self._runners:
            self._runners.remove(runner)

    def pump(self) -> None:
        """Feed every runner once."""
        for runner in list(self._runners):
            runner.pump()

    def wait_for(self, ready: Callable[[], bool]) -> None:
        """Keep every runner fed until ``ready()``; the caller puts its stop check in it."""
        while True:
            self.wake.clear()
            self.pump()
            if ready():
                return
            self.wake.wait(POLL_SECONDS)

    def stop(self) -> None:
        """Stop every stream (safe from a signal handler)."""
        self.stopped = True
        for stop in list(self._on_stop):
            stop()
        for runner in list(self._runners):
            runner.stop()

    def close(self) -> None:
        """Close every runner still open (the run is over, or leaving at once)."""
        for runner in list(self._runners):
            runner.close()
        self._runners.clear()


class WorkerPool:
    """Threads for one runner's units; each finished unit wakes the run loop."""

    def __init__(self, workers: int, wake: threading.Event) -> None:
        self.workers = workers
        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=WORKER_THREAD_PREFIX
        )
        self._wake = wake

    def submit(self, fn: Callable[..., R], *args: Any) -> Future[R]:
        """Run ``fn(*args)`` on a worker."""
        future = self._executor.submit(fn, *args)
        future.add_done_callback(lambda _: self._wake.set())
        return future

    def close(self) -> None:
        """Cancel what has not started; never wait for a worker (it sees its stop event)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


class InOrder(Generic[T, R]):
    """Units run on a pool and handed back in the order given.

    While the main thread takes results (:attr:`bounded`), at most ``window`` units are in
    flight or finished and not yet taken; before that (the stream waits for its turn) the
    window is lifted: no more units are in flight than the pool has workers, and ``may_start``
    bounds how many finished ones may wait (the spool's byte bound), so a stream fetches ahead
    while another is written out, each request started only when a worker is free to read it
    through. ``may_start(in_flight)`` is asked before each start; a unit ``skip`` says no to
    when its turn to start comes is neither run nor handed back.
    """

    def __init__(
        self,
        items: Sequence[T],
        run: Callable[[int, T], R],
        pool: WorkerPool,
        *,
        window: int,
        may_start: Callable[[bool], bool] = lambda _in_flight: True,
        skip: Callable[[T], bool] = lambda _item: False,
    ) -> None:
        self._items = items
        self._skip = skip
        self._run = run
        self._pool = pool
        self._window = window
        self._may_start = may_start
        self.started = 0
        self.pending: deque[tuple[int, Future[R]]] = deque()
        self.ready: deque[tuple[int, Future[R]]] = deque()
        self.bounded = False

    @property
    def head(self) -> int:
        """The index of the first unit not yet taken."""
        if self.ready:
            return self.ready[0][0]
        if self.pending:
            return self.pending[0][0]
        return self.started

    @property
    def finished(self) -> bool:
        """Nothing in flight and nothing waiting to be taken."""
        return not self.pending and not self.ready

    def pump(self) -> None:
        """Move finished units to :attr:`ready`, in order; start what the bounds allow."""
        while self.pending and self.pending[0][1].done():
            self.ready.append(self.pending.popleft())
        while (
            self.started < len(self._items)
            and (
                len(self.pending) + len(self.ready) < self._window
                if self.bounded
                else len(self.pending) < self._pool.workers
            )
            and self._may_start(bool(self.pending))
        ):
            index = self.started
            self.started += 1
            if not self._skip(self._items[index]):
                self.pending.append(
                    (index, self._pool.submit(self._run, index, self._items[index]))
                )

    def take(self) -> tuple[int, Future[R]]:
        """The next finished unit, in order (call only when :attr:`ready` is not empty)."""
        return self.ready.popleft()


def in_order(
    loop: RunLoop,
    items: Sequence[T],
    run: Callable[[int, T], R],
    *,
    workers: int,
    stop: threading.Event,
    skip: Callable[[T], bool] = lambda _item: False,
) -> Iterator[tuple[T, R]]:
    """Each item with ``run``'s value, in order, fetched up to ``workers`` at once and at most
    twice that many ahead; ends quietly when ``stop`` is set. Items ``skip`` says no to when
    their turn to start comes are left out.

    The value's exceptions are raised here, on the main thread.
    """
    pool = WorkerPool(workers, loop.wake)
    units = InOrder(items, run, pool, window=2 * workers, skip=skip)
    units.bounded = True
    runner = _Units(units, pool, stop)
    loop.add(runner)
    try:
        while True:
            loop.wait_for(lambda: stop.is_set() or bool(units.ready) or units.finished)
            if stop.is_set() or not units.ready:
                return
            index, future = units.take()
            yield items[index], future.result()
    finally:
        runner.close()
        loop.remove(runner)


class _Units:
    """:class:`InOrder` as a :class:`Runner`."""

    def __init__(self, units: InOrder[Any, Any], pool: WorkerPool, stop: threading.Event) -> None:
        self._units = units
        self._pool = pool
        self._stop = stop

    def pump(self) -> None:
        if not self._stop.is_set():
            self._units.pump()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._pool.close()


def workers_finished(grace: float) -> bool:
    """Give idle or stopping workers ``grace`` seconds to end; True when none is left."""
    deadline = time.monotonic() + grace
    for thread in threading.enumerate():
        if thread.name.startswith(WORKER_THREAD_PREFIX):
            thread.join(max(0.0, deadline - time.monotonic()))
    return not any(
        t.is_alive() and t.name.startswith(WORKER_THREAD_PREFIX) for t in threading.enumerate()
    )
