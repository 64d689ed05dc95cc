"""Fault tolerance: a killed trial worker is retried from its checkpoint, and a killed driver's
sweep resumes under the same parent run; MLflow histories stay continuous throughout."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import pytest

from conftest import blobs_spec, kill_session, run_sweep, sqlite_store, start_sweep, wait_until
from trainyard.sweep import reaper

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

EPOCH_END_STEPS = [10 * epoch + 9 for epoch in range(6)]  # 10 steps an epoch; Lightning logs at the last


def assert_continuous(store, run) -> None:
    """Every epoch once, in order, and every step-level value once: nothing missing or repeated."""
    assert [step for step, _ in store.history(run.info.run_id, "val/acc")] == EPOCH_END_STEPS
    loss_steps = [step for step, _ in store.history(run.info.run_id, "train/loss")]
    assert loss_steps == sorted(set(loss_steps)) and loss_steps[-1] > EPOCH_END_STEPS[-2]


def test_a_killed_trial_worker_is_retried_from_its_last_checkpoint(tmp_path, sweep_env):
    sweep = """\
    sweep:
      metric: val/acc
      mode: max
      max_failures: 1
      space:
        optimizer.lr: {grid: [0.3]}
    """
    path = blobs_spec(tmp_path, sweep, epochs=6, model_params=", seconds_per_step: 0.05",
                      trainer_options=", log_every_n_steps: 5")
    store = sqlite_store(tmp_path)
    process = start_sweep(path, env=sweep_env)
    try:
        trial = wait_until(lambda: next((run for run in store.children()
                                         if len(store.history(run.info.run_id, "val/acc")) >= 2), None),
                           timeout=180, what="two epochs of the trial", process=process)
        os.kill(int(trial.data.tags["trainyard.ray.pid"]), signal.SIGKILL)
        out, err = process.communicate(timeout=300)
    finally:
        kill_session(process)
    assert process.returncode == 0, out + err
    [run] = store.children()
    assert run.info.status == "FINISHED" and run.data.tags["trainyard.trial.attempt"] == "2"
    assert run.data.tags["trainyard.ray.pid"] != trial.data.tags["trainyard.ray.pid"]
    assert_continuous(store, run)
    assert run.data.metrics["test/acc"] > 0.9


def test_a_killed_driver_resumes_under_the_same_parent_without_rerunning_finished_trials(tmp_path, sweep_env):
    sweep = """\
    sweep:
      metric: val/acc
      mode: max
      max_concurrent: 2
      space:
        optimizer.lr: {grid: [0.3, 0.2, 0.1, 0.05]}
    """
    # Two at a time: the kill comes once the first pair has finished and the next is midway.
    spec = blobs_spec(tmp_path, sweep, epochs=6, model_params=", seconds_per_step: 0.05")
    store = sqlite_store(tmp_path)
    process = start_sweep(spec, env=sweep_env)
    try:
        wait_until(lambda: any(run.info.status == "FINISHED" for run in store.children())
                   and any(run.info.status == "RUNNING" and len(store.history(run.info.run_id, "val/acc")) >= 2
                           for run in store.children()),
                   timeout=240, what="a finished trial and one midway", process=process, interval=0.2)
        ray_processes = reaper.descendants(process.pid)  # Ray's own, the trials', the watcher's
        process.send_signal(signal.SIGKILL)  # the driver alone; its local Ray instance goes with it
        process.wait(timeout=60)
        # Within 10 s nothing it started is left (reaper.py: Ray leaves its agents otherwise).
        wait_until(lambda: not any(reaper.alive(*process) for process in ray_processes.items()), timeout=10,
                   what="the driver's processes to end", interval=0.2)
    finally:
        kill_session(process)
    [parent] = store.parents()
    assert parent.info.status == "RUNNING"  # nothing could end it
    # What the driver printed until it was killed is in its sweep's driver.log, not in /tmp.
    [state] = (spec.parent / "sweeps").glob("*/trainyard-sweep.json")
    assert "Configuration for experiment" in (state.parent / "driver.log").read_text()
    assert not [log for log in Path(tempfile.gettempdir()).glob("trainyard-driver-*.log")
                if state.parent.name in text_of(log)]
    before = {run.data.tags["trainyard.trial_id"]: run for run in store.children()}
    finished_before = {trial: run for trial, run in before.items() if run.info.status == "FINISHED"}
    interrupted = {trial for trial, run in before.items() if run.info.status == "RUNNING"}

    result = run_sweep(spec, "--resume", env=sweep_env)
    assert result.returncode == 0, result.stdout + result.stderr
    [resumed] = store.parents()
    assert resumed.info.run_id == parent.info.run_id and resumed.info.status == "FINISHED"
    after = {run.data.tags["trainyard.trial_id"]: run for run in store.children()}
    assert len(after) == 4 and all(run.info.status == "FINISHED" for run in after.values())
    for trial, run in finished_before.items():  # not rerun: same run, untouched
        assert after[trial].info.end_time == run.info.end_time
        assert after[trial].data.tags["trainyard.trial.attempt"] == "1"
    for trial in interrupted:  # continued in the same child run, from its checkpoint
        assert after[trial].data.tags["trainyard.trial.attempt"] == "2"
    for run in after.values():
        assert_continuous(store, run)
    assert resumed.data.metrics["sweep/finished"] == 4


def test_a_trial_that_failed_before_opening_its_child_run_is_recorded_once_and_can_be_continued(tmp_path):
    """A trial whose node died while it started has no child run; the driver records one, FAILED,
    so that the parent's summary counts it, and a resumed trial continues that run."""
    from mlflow import MlflowClient

    from trainyard.sweep.child_run import ChildRun, finish_for_trial

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("sweeps")
    parent = client.create_run(experiment).info.run_id
    for _ in range(2):  # the second call finds the run the first made
        finish_for_trial(uri, None, experiment, parent, "t_00007", "FAILED", error="ActorUnavailableError: lost",
                         values={"optimizer.lr": 0.1})
    [run] = sqlite_store(tmp_path).children(parent)
    assert run.info.status == "FAILED" and run.data.params == {"optimizer.lr": "0.1"}
    assert run.data.tags["trainyard.trial_id"] == "t_00007" and run.data.tags["trainyard.error"].startswith("Actor")
    finish_for_trial(uri, None, experiment, parent, "t_00008", "FINISHED")  # not a failure: nothing to record
    assert len(sqlite_store(tmp_path).children(parent)) == 1

    continued = ChildRun.open(uri, experiment, parent, "t_00007", "trial-t_00007",
                              {"optimizer.lr": 0.1, "trainer.max_epochs": 6}, {})
    assert continued.run_id == run.info.run_id
    run = client.get_run(run.info.run_id)
    assert run.info.status == "RUNNING" and run.data.tags["trainyard.trial.attempt"] == "2"
    assert run.data.params == {"optimizer.lr": "0.1", "trainer.max_epochs": "6"}  # the rest of its params


def test_an_algorithm_trials_params_go_with_its_metrics_and_survive_its_death(tmp_path, monkeypatch):
    """An algorithm trial writes its params in its metrics' request (one write fewer per trial);
    if its process dies before that, the driver's FAILED status brings the sampled values."""
    from mlflow import MlflowClient

    from trainyard.sweep.child_run import ChildRun, finish_for_trial

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("sweeps")
    parent = client.create_run(experiment).info.run_id
    requests = []
    original = MlflowClient.log_batch
    monkeypatch.setattr(MlflowClient, "log_batch", lambda self, run_id, **kwargs: (
        requests.append(kwargs), original(self, run_id, **kwargs))[1])
    params = {f"algorithm.params.p{i}": i for i in range(150)}  # more than one request's 100 params
    child = ChildRun.open(uri, experiment, parent, "t_1", "trial-t_1", params, {}, None, params_with_metrics=True)
    assert requests == [] and client.get_run(child.run_id).data.params == {}
    child.buffer({"test/return": 1.5}, 0)
    child.end("FINISHED")
    run = client.get_run(child.run_id)
    assert run.data.params == {key: str(value) for key, value in params.items()}
    assert run.data.metrics == {"test/return": 1.5} and run.info.status == "FINISHED"
    assert [(len(r["params"]), len(r["metrics"])) for r in requests] == [(100, 1), (50, 0)]

    dead = ChildRun.open(uri, experiment, parent, "t_2", "trial-t_2", params, {}, None, params_with_metrics=True)
    finish_for_trial(uri, dead.run_id, experiment, parent, "t_2", "FAILED", error="RayActorError: died",
                     values={"algorithm.params.epsilon": 0.25})
    run = client.get_run(dead.run_id)
    assert run.info.status == "FAILED" and run.data.params == {"algorithm.params.epsilon": "0.25"}


def test_only_trials_that_lost_their_worker_are_resumed_by_the_driver():
    """After Tune ends, the driver resumes trials that ended ERROR only when every one of them lost
    its actor (a node died); a trial's own exception has had its max_failures retries."""
    from types import SimpleNamespace

    from ray.exceptions import ActorUnavailableError, RayActorError

    from trainyard.sweep.driver import _lost_with_their_workers

    def results(*errors):
        return [SimpleNamespace(error=error) for error in errors]

    wrapped = RuntimeError("restore failed")
    wrapped.__cause__ = RayActorError()
    assert _lost_with_their_workers(results(None, ActorUnavailableError("node lost", None), wrapped))
    assert not _lost_with_their_workers(results(None, None))
    assert not _lost_with_their_workers(results(RayActorError(), ValueError("the trial's own")))


def text_of(path: Path) -> str:
    """A file's text, or "" if it is gone (another test's sweep may remove its log meanwhile)."""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
