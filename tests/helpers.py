"""Helpers for tests that run the `trainyard` command in a child process or need a server, and
baselines that several families' tests measure against."""

from __future__ import annotations

import collections
import math
import os
import random
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
# The browser tests (tests/core/test_ui_browser.py): their screenshots, and how a skip of theirs
# begins, which tests/conftest.py repeats at the end of the run.
SCREENSHOTS = ROOT / "test-artifacts" / "browser"
BROWSER_NOT_RUN = "browser tests did not run"

def subprocess_env(plugin_site: Path | None = None, plugins: str | None = None) -> dict[str, str]:
    """Environment for running the `trainyard` command in a child process."""
    # MLflow's process-wide choices, which a run trained inside the test process leaves in os.environ
    # (mlflow.set_experiment sets MLFLOW_EXPERIMENT_ID), are not the child's.
    dropped = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID", "TRAINYARD_PLUGINS")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    if plugin_site is not None:
        env["PYTHONPATH"] = str(plugin_site)
    if plugins is not None:
        env["TRAINYARD_PLUGINS"] = plugins
    env["PYTHONUNBUFFERED"] = "1"
    return env


def trainyard_command() -> list[str]:
    return [str(Path(sys.executable).with_name("trainyard"))]


# free_port's ports: above Ray's worker ports (10002-19999) and below the kernel's ephemeral
# range, which is where a process binding port 0 gets its port (empty where that range starts lower).
EPHEMERAL_START = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
PORTS = range(20000, 32768) if EPHEMERAL_START >= 32768 else range(0)
_HANDED_OUT: set[int] = set()
_RANDOM = random.Random()  # its own generator: tests that seed `random` must not make workers agree


def free_port() -> int:
    """A port free now, for a server started later, and never one this process handed out
    before. It comes from PORTS, outside the kernel's ephemeral range: else a server that binds
    port 0 (Ray's raylets and agents do, eight nodes of them in the scale test) could be given
    it before its own server binds it."""
    for _ in range(1000):
        port = _RANDOM.choice(PORTS) if PORTS else 0  # 0: the kernel's choice
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port found")


def wait_for_http(url: str, timeout: float = 60.0, process=None) -> None:
    """Poll until `url` answers 200, failing early if `process` has exited."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise TimeoutError(url)


def unigram_bits(train: str, text: str) -> float:
    """Bits per character of `text` under the training split's character frequencies (add-one)."""
    counts = collections.Counter(train)
    total, size = sum(counts.values()), len(counts) + 1
    return -sum(math.log2((counts.get(char, 0) + 1) / (total + size)) for char in text) / len(text)


def trained_a_little(spec: Path, steps: int = 40):
    """An encoder-decoder trained for a few dozen steps on its spec's data (far from perfect, so
    that decoding has choices to make), and its validation batches."""
    import torch

    from trainyard.build import build
    from trainyard.validate import load_experiment

    built = build(load_experiment(spec))
    model, data = built.model, built.data
    data.setup("fit")
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
    batches = list(data.train_dataloader())
    for step in range(steps):
        batch = batches[step % len(batches)]
        loss = model._loss(model(batch["source"], batch["source_lengths"], batch["target"]), batch["target"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), list(data.val_dataloader())
