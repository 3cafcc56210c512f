"""Imported first by the scan's forkserver (and nowhere else): leave signals to the scan.

The scan process starts the forkserver with SIGINT and SIGTERM blocked and names itself in
``DATAGATE_FORKSERVER_PARENT`` (:func:`datagate.scanner.executors.process_pool`). Here,
before the compute stack is imported, the server ignores both signals and unblocks them;
the workers it forks inherit that, so a Ctrl-C in the terminal reaches only the scan
process, which stops the pool itself.
"""

from __future__ import annotations

import os
import signal

from datagate.scanner.executors import FORKSERVER_PARENT_ENV, ignore_signals

if os.environ.pop(FORKSERVER_PARENT_ENV, None) == str(os.getppid()):
    ignore_signals()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGINT, signal.SIGTERM))
