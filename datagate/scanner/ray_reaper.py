"""Ends the processes of a local Ray when the process that started it ends, however it ends.

``ray.init()`` ties what it starts to the driver with ``PR_SET_PDEATHSIG`` (gcs_server,
raylet, dashboard and monitors die with it), and Ray's workers exit once their raylet is
gone. The raylet's agents (dashboard agent, runtime-env agent) notice too, but then spend up
to a minute trying to report to the dead GCS: a scan killed with SIGKILL left them behind.

:func:`datagate.scanner.ray_engine.connect` runs this file as a process of its own (in a
session of its own, so a Ctrl-C in the terminal does not reach it) before ``ray.init()``,
and writes Ray's session directory to its stdin once Ray runs. When the driver has exited
(its pidfd turns readable) or closes the pipe (:func:`~datagate.scanner.ray_engine.shutdown`),
this process stops every process that has a file open in that session directory (SIGTERM,
then SIGKILL a second later) and exits. Only processes running this Python or one of Ray's
own binaries count, so a ``tail -f`` of a Ray log lives on. Standard library only: it starts
in a few milliseconds and imports nothing of the scan.

Usage: ``python ray_reaper.py DRIVER_PID RAY_PACKAGE_DIR`` (Linux: it reads ``/proc``).
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import sys
import time
from collections.abc import Iterable

#: Seconds between SIGTERM and SIGKILL, and how many sweeps at most (a sweep that finds
#: nothing ends it).
GRACE_S = 1.0
SWEEPS = 3


def main(argv: list[str]) -> int:
    driver, ray_dir = int(argv[0]), os.path.realpath(argv[1])
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    session = _wait(driver)
    exes = (os.path.realpath(sys.executable), ray_dir + os.sep)
    for _ in range(SWEEPS):
        found = _processes(session, driver, exes)
        if not found:
            break
        _stop(found)
    return 0


def _wait(driver: int) -> str | None:
    """Block until the driver exits or closes our stdin; the session directory it sent."""
    try:
        pidfd: int | None = os.pidfd_open(driver)  # Linux 5.3+: readable once it has exited
    except (AttributeError, OSError):
        pidfd = None
    sent = b""
    if os.getppid() != driver:  # already gone (the pid may be another process's by now)
        return _session(sent)
    watched = [0] if pidfd is None else [0, pidfd]
    while True:
        ready, _, _ = select.select(watched, [], [])
        if pidfd in ready:
            break
        chunk = os.read(0, 4096)
        if not chunk:  # the driver closed the pipe (shutdown), or died holding it
            break
        sent += chunk
    return _session(sent)


def _session(sent: bytes) -> str | None:
    lines = sent.decode(errors="replace").split()
    return os.path.realpath(lines[-1]) if lines else None


def _processes(session: str | None, driver: int, exes: tuple[str, str]) -> dict[int, int | None]:
    """This Ray's processes now: pid -> pidfd (None where pidfds are not available).

    Without the session directory (the driver died inside ``ray.init()``), any directory
    named as Ray names the sessions of this driver (``session_<date>_<time>_<us>_<pid>``).
    """
    if session is not None:
        inside = re.compile("^" + re.escape(session) + "(/|$)")
    else:
        inside = re.compile(rf"/session_\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d_\d+_{driver}(/|$)")
    found: dict[int, int | None] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (os.getpid(), driver):
            continue
        pid = int(entry)
        try:
            pidfd: int | None = os.pidfd_open(pid)  # this very process, whatever comes next
        except (AttributeError, OSError):
            pidfd = None
        if _is_ray(pid, inside, exes):
            found[pid] = pidfd
        elif pidfd is not None:
            os.close(pidfd)
    return found


def _is_ray(pid: int, inside: re.Pattern[str], exes: tuple[str, str]) -> bool:
    """Whether ``pid`` runs this Python or a Ray binary and has a file open in the session."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        if exe != exes[0] and not exe.startswith(exes[1]):
            return False
        return any(inside.search(path) for path in _open_files(pid))
    except OSError:  # gone, or not ours to look into
        return False


def _open_files(pid: int) -> Iterable[str]:
    fds = f"/proc/{pid}/fd"
    for fd in os.listdir(fds):
        with contextlib.suppress(OSError):
            yield os.readlink(f"{fds}/{fd}")


def _stop(found: dict[int, int | None]) -> None:
    """SIGTERM each process, SIGKILL what is left after :data:`GRACE_S`, and wait (as long
    again at most) until those have ended."""
    for pid, pidfd in found.items():
        _signal(pid, pidfd, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    left = dict(found)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = {pid: fd for pid, fd in left.items() if _alive(pid, fd)}
    for pid, pidfd in left.items():
        _signal(pid, pidfd, signal.SIGKILL)
    deadline = time.monotonic() + GRACE_S  # gone, not just signalled, when we exit
    while left and time.monotonic() < deadline:
        left = {pid: fd for pid, fd in left.items() if _alive(pid, fd)}
        time.sleep(0.01)
    for pidfd in found.values():
        if pidfd is not None:
            os.close(pidfd)


def _signal(pid: int, pidfd: int | None, sig: int) -> None:
    with contextlib.suppress(OSError):  # gone already
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, sig)
        else:
            os.kill(pid, sig)


def _alive(pid: int, pidfd: int | None) -> bool:
    if pidfd is not None:
        return not select.select([pidfd], [], [], 0)[0]
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
