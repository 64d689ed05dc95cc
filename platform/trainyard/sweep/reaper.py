"""Nothing of a local Ray instance outlives the sweep driver that started it.

`ray.init()` ties its main processes to the driver, but not all of them (its dashboard and
runtime-environment agents live on), and a driver killed with SIGKILL runs no clean-up. So the
driver starts this small watcher beside it (`python -m trainyard.sweep.reaper <driver pid>`): every
half second it notes the driver's descendants, and once the driver is gone it kills those that
are still there. It is used only for a Ray instance the driver started itself, never for a
cluster it joined. (Written by hand: neither Ray nor the standard library has a process-tree
watcher, and psutil is not a dependency.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

INTERVAL = 0.5


def start(driver: int | None = None) -> subprocess.Popen:
    """The watcher of `driver` (default: this process), in a session of its own, so that a
    Ctrl-C meant for the sweep does not reach it first."""
    return subprocess.Popen([sys.executable, "-m", "trainyard.sweep.reaper", str(driver or os.getpid())],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live process, from /proc/<pid>/stat; None if gone or a
    zombie (a killed driver stays one until its parent reaps it)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[19])


def alive(pid: int, started: int) -> bool:
    """Whether the process that started at `started` still runs as `pid` (not a reused pid)."""
    return (stat := _stat(pid)) is not None and stat[1] == started


def descendants(root: int) -> dict[int, int]:
    """{pid: start time} of every process below `root`."""
    children: dict[int, list[int]] = {}
    started: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(stat[0], []).append(int(entry.name))
            started[int(entry.name)] = stat[1]
    found, stack = {}, list(children.get(root, []))
    while stack:
        pid = stack.pop()
        if pid in started and pid not in found:
            found[pid] = started[pid]
            stack += children.get(pid, [])
    return found


def watch(driver: int) -> None:
    own = os.getpid()
    driver_started = (_stat(driver) or (0, None))[1]
    known: dict[int, int] = {}
    while (stat := _stat(driver)) is not None and stat[1] == driver_started:
        known = {pid: started for pid, started in descendants(driver).items() if pid != own}
        time.sleep(INTERVAL)
    for pid, started in known.items():
        if alive(pid, started):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


if __name__ == "__main__":
    watch(int(sys.argv[1]))
