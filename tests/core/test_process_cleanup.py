"""Ending a multi-process run in any way leaves no process of it behind within 10 s: SIGKILL,
SIGTERM or Ctrl-C (SIGINT) of the `trainyard run` that launched it, while its processes are
still starting and meeting each other, or while they train; and the run is not left RUNNING."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from helpers import subprocess_env, trainyard_command

SPEC = """\
name: cleanup
seed: 0
model: {{name: cnn.lenet5}}
data: {{name: cnn.digits, params: {{batch_size: 16}}}}
trainer: {{max_epochs: 200, devices: {devices}, accelerator: cpu, progress_bar: false, log_every_n_steps: 1}}
tracking: {{uri: "sqlite:///{store}", log_model: false}}
"""
DEVICES = 2


def processes_of(spec: Path) -> list[int]:
    """Every process whose command line names this test's spec file."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(spec).encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def launched_ranks(spec: Path) -> int:
    """The data-parallel ranks Lightning launched for this spec: processes started with LOCAL_RANK
    set. (Counting command lines alone also counts a child that rank 0 has forked and not yet
    replaced by another program, such as the git that reads the spec's commit before the run
    exists.)"""
    launched = 0
    for pid in processes_of(spec):
        try:
            if b"\0LOCAL_RANK=" in b"\0" + Path(f"/proc/{pid}/environ").read_bytes():
                launched += 1
        except OSError:
            continue
    return launched


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def metrics_logged(store: Path) -> bool:
    try:
        with sqlite3.connect(store, timeout=1) as db:
            return db.execute("select count(*) from metrics").fetchone()[0] > 0
    except sqlite3.Error:
        return False


def run_status(store: Path) -> str:
    with sqlite3.connect(store) as db:
        return db.execute("select status from runs").fetchone()[0]


@pytest.mark.slow
@pytest.mark.parametrize("signum,when", [
    (signal.SIGKILL, "starting"), (signal.SIGTERM, "starting"), (signal.SIGINT, "training"),
], ids=["SIGKILL while starting", "SIGTERM while starting", "Ctrl-C while training"])
def test_no_process_outlives_its_run(tmp_path, signum, when):
    store = tmp_path / "mlflow.db"
    spec = tmp_path / "cleanup.yaml"
    spec.write_text(SPEC.format(devices=DEVICES, store=store))
    parent = subprocess.Popen([*trainyard_command(), "run", str(spec)], cwd=tmp_path, env=subprocess_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        if when == "starting":  # the other ranks exist, and are still importing and meeting rank 0
            assert wait_for(lambda: launched_ranks(spec) == DEVICES - 1, 120), "the ranks never started"
        else:
            assert wait_for(lambda: metrics_logged(store), 240), "training never started"
            assert len(processes_of(spec)) == DEVICES
        parent.send_signal(signum)
        assert wait_for(lambda: not processes_of(spec), 10), f"left behind: {processes_of(spec)}"
    finally:
        for pid in processes_of(spec):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        parent.wait(timeout=30)
    if signum != signal.SIGKILL:  # SIGKILL leaves no chance to write anything
        assert parent.returncode == 128 + signum
        assert run_status(store) == "KILLED"
        assert "the MLflow run is marked KILLED" in parent.stderr.read()

