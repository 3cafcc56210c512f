"""Executors: where the per-record compute runs. The scan engine only submits and waits.

Every executor is a :class:`concurrent.futures.Executor` (``submit`` returns a future), so
the engine's scheduling, resume and merge are the same whatever runs the work:

* ``inline``: in this process, one chunk at a time (``--workers 1``, small hook runs, tests);
* ``local``: a process pool on this machine's cores (the default).
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any

from datagate.scanner.decode import configure_pillow


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


def _init_worker() -> None:
    configure_pillow()


def process_pool(workers: int) -> Executor:
    """A pool of ``workers`` processes that have imported the signal stack once."""
    if sys.platform.startswith("linux"):
        # forkserver: no fork of a process that runs threads (the progress bar); the server
        # imports the compute stack once, so workers start without paying for it again
        context: multiprocessing.context.BaseContext = multiprocessing.get_context("forkserver")
        from datagate.scanner.signals import SIGNALS

        plugins = sorted({cls.__module__ for cls in SIGNALS.values()})
        context.set_forkserver_preload(["datagate.scanner.compute", *plugins])
    else:
        context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker)


def make_executor(workers: int) -> Executor:
    """``inline`` for one worker, else ``local`` with that many processes."""
    return InlineExecutor() if workers <= 1 else process_pool(workers)
