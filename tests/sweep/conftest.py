"""Helpers for sweep tests: specs over the example plugin, `trainyard sweep` in a child process,
and reading the parent and child runs back from MLflow.

Every test here that starts Ray is in the xdist group "ray": they run one after another on one
pytest worker, so that two Ray instances never compete for this machine's two cores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from helpers import subprocess_env, trainyard_command

BLOBS = """\
name: {name}
seed: 0
data: {{name: example.blobs, params: {{samples: 300, batch_size: 30}}}}
model: {{name: example.mlp, params: {{hidden: 16{model_params}}}}}
optimizer: {{name: sgd, lr: 0.3}}
trainer: {{max_epochs: {epochs}, checkpoint: {{monitor: val/acc, mode: max}}{trainer_options}}}
tracking: {{experiment: sweeps}}
"""


def blobs_spec(folder: Path, sweep: str, name: str = "blobs-sweep", epochs: int = 4, model_params: str = "",
               trainer_options: str = "", extra: str = "") -> Path:
    """A spec over the example plugin's blobs and MLP (10 steps an epoch) with the given sweep section."""
    text = BLOBS.format(name=name, epochs=epochs, model_params=model_params, trainer_options=trainer_options) \
        + textwrap.dedent(extra) + textwrap.dedent(sweep)
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def sweep_env(plugin_site):
    """Environment for `trainyard sweep` children: the example plugin importable by Ray's workers."""
    return subprocess_env(plugin_site, plugins="example,cnn")


def run_sweep(spec: Path, *args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*trainyard_command(), "sweep", str(spec), *args], env=env, cwd=spec.parent,
                          capture_output=True, text=True, timeout=timeout)


def start_sweep(spec: Path, *args: str, env: dict[str, str]) -> subprocess.Popen:
    """`trainyard sweep` in the background, in a session of its own (so that the local Ray
    instance it starts can be cleaned up with it)."""
    return subprocess.Popen([*trainyard_command(), "sweep", str(spec), *args], env=env, cwd=spec.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def kill_session(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def wait_until(condition, timeout: float, what: str, process: subprocess.Popen | None = None, interval=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"the sweep exited ({process.returncode}) before {what}:\n{out}\n{err}")
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


class Store:
    """The runs of one MLflow store, as a sweep left them."""

    def __init__(self, uri: str, experiment: str = "sweeps"):
        self.client = MlflowClient(uri)
        self.experiment = experiment

    def runs(self):
        found = self.client.get_experiment_by_name(self.experiment)
        return [] if found is None else self.client.search_runs([found.experiment_id], max_results=1000)

    def parents(self):
        return [run for run in self.runs() if "mlflow.parentRunId" not in run.data.tags]

    def children(self, parent_id: str | None = None):
        return [run for run in self.runs() if run.data.tags.get("mlflow.parentRunId")
                and (parent_id is None or run.data.tags["mlflow.parentRunId"] == parent_id)]

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in self.client.get_metric_history(run_id, key))


def sqlite_store(folder: Path) -> Store:
    return Store(f"sqlite:///{folder / 'mlflow.db'}")
