"""Executors: where the per-record compute runs. The scan engine only submits and waits.

Every executor is a :class:`concurrent.futures.Executor` (``submit`` returns a future), so
the engine's scheduling, resume and merge are the same whatever runs the work:

* ``inline``: in this process, one chunk at a time (``--workers 1``, small hook runs, tests);
* ``local``: a process pool on this machine's cores (the default).

Signals belong to the scan process alone: pool processes ignore SIGINT and SIGTERM (a Ctrl-C
reaches the whole process group), the scan stops them itself (:func:`stop`), and each worker
exits as soon as the scan process is gone, even when it was killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any

from datagate.scanner.decode import configure_pillow

#: Set (to the scan's pid) only in the environment the forkserver starts with; see
#: :mod:`datagate.scanner._forkserver`.
FORKSERVER_PARENT_ENV = "DATAGATE_FORKSERVER_PARENT"
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class InlineExecutor(Executor):
    """Runs submitted work immediately in this process."""

    def __init__(self) -> None:
        configure_pillow()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


class LocalPool(ProcessPoolExecutor):
    """A process pool whose ``submit`` is not cut short by a Ctrl-C.

    ``submit`` may start a worker; an interrupt between the forkserver's fork and the pool
    recording the new process would leave that process half-started (it then fails loudly
    once the scan has exited), so SIGINT and SIGTERM wait until ``submit`` returns.
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with _signals_deferred():
            return super().submit(fn, *args, **kwargs)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    for sig, handler in previous.items():
        if handler is not None:
            signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)
        for signum in caught:
            signal.raise_signal(signum)  # now, to the handler that was deferred


def ignore_signals() -> None:
    """Leave SIGINT and SIGTERM to the scan process (it stops the pool itself)."""
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _init_worker(parent: int) -> None:
    ignore_signals()
    threading.Thread(target=_exit_with, args=(parent,), name="datagate-parent", daemon=True).start()
    configure_pillow()


def _exit_with(parent: int) -> None:
    """Exit this worker when process ``parent`` (the scan) has ended, however it ended.

    A worker blocked on the pool's queue would otherwise live on forever after a SIGKILL of
    the scan (it holds the queue's write end itself), and keep the forkserver and resource
    tracker alive with it.
    """
    try:
        fd = os.pidfd_open(parent)  # Linux 5.3+: readable once the process has exited
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        select.select([fd], [], [])
    else:
        while _alive(parent):
            time.sleep(0.5)
    os._exit(1)


def _alive(pid: int) -> bool:
    if os.getppid() == 1:
        return False  # re-parented: the process that started us is gone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_pool(workers: int) -> Executor:
    """A pool of ``workers`` processes that have imported the signal stack once."""
    if sys.platform.startswith("linux"):
        # forkserver: no fork of a process that runs threads (the progress bar); the server
        # imports the compute stack once, so workers start without paying for it again
        context: multiprocessing.context.BaseContext = multiprocessing.get_context("forkserver")
        from datagate.scanner.signals import SIGNALS

        plugins = sorted({cls.__module__ for cls in SIGNALS.values()})
        # pandas: pyarrow imports it (when installed) on a chunk's first table conversion
        context.set_forkserver_preload(
            ["datagate.scanner._forkserver", "pandas", "datagate.scanner.compute", *plugins]
        )
        _start_forkserver()
    else:
        context = multiprocessing.get_context("spawn")
    return LocalPool(
        max_workers=workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(os.getpid(),),
    )


def _start_forkserver() -> None:
    """Start the forkserver now, with SIGINT and SIGTERM blocked until it ignores them.

    Started lazily by the first submit, it would take a Ctrl-C while importing the compute
    stack and die printing a traceback. A blocked signal stays pending for this process, so
    no Ctrl-C is lost here.
    """
    from multiprocessing import forkserver, resource_tracker

    # the tracker blocks the signals for its own start, then unblocks them: start it first
    resource_tracker.ensure_running()
    blocked = threading.current_thread() is threading.main_thread()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS) if blocked else None
    os.environ[FORKSERVER_PARENT_ENV] = str(os.getpid())
    try:
        forkserver.ensure_running()
    finally:
        os.environ.pop(FORKSERVER_PARENT_ENV, None)
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def stop(executor: Executor) -> None:
    """Stop ``executor`` now (an interrupt, an error): cancel queued chunks and kill the
    worker processes rather than wait for the chunks they run (parts are written atomically,
    so a killed chunk is simply computed again on resume)."""
    processes = list((getattr(executor, "_processes", None) or {}).values())  # 3.14: kill_workers
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(Exception):
            process.kill()
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(timeout=5)


def make_executor(workers: int) -> Executor:
    """``inline`` for one worker, else ``local`` with that many processes."""
    return InlineExecutor() if workers <= 1 else process_pool(workers)


def executor_name(workers: int) -> str:
    """The class :func:`make_executor` would use, without starting it."""
    return InlineExecutor.__name__ if workers <= 1 else LocalPool.__name__
