"""Sweeps on a local Ray instance: nesting under one parent run, schedulers, searchers, output."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import blobs_spec, run_sweep, sqlite_store

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

ASHA = """\
sweep:
  metric: val/acc
  mode: max
  max_concurrent: 2
  scheduler: {name: asha, grace_period: 1, reduction_factor: 2}
  space:
    # Two trials that learn within an epoch, then two that cannot: ASHA sees the good ones'
    # results at each rung first (grid order, two at a time) and stops the others at epoch 1.
    optimizer.lr: {grid: [0.3, 0.3, 1.0e-6, 2.0e-6]}
"""


def test_asha_sweep_nests_every_trial_under_one_parent_and_stops_poor_trials(tmp_path, sweep_env):
    result = run_sweep(blobs_spec(tmp_path, ASHA), env=sweep_env)
    assert result.returncode == 0, result.stdout + result.stderr
    store = sqlite_store(tmp_path)
    [parent] = store.parents()
    children = store.children(parent.info.run_id)
    assert len(children) == 4 and {run.data.tags["mlflow.parentRunId"] for run in children} == {parent.info.run_id}
    assert parent.info.status == "FINISHED" and all(run.info.status == "FINISHED" for run in children)

    by_lr = {}
    for run in children:
        by_lr.setdefault(float(run.data.params["optimizer.lr"]), []).append(run)
    for run in by_lr[0.3]:  # trained every epoch, tested, kept their best checkpoint
        assert [step for step, _ in store.history(run.info.run_id, "val/acc")] == [9, 19, 29, 39]
        assert run.data.metrics["test/acc"] > 0.9
        assert run.data.tags.get("trainyard.trial.stopped_early") is None
        assert [a.path for a in store.client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/best.ckpt"]
    for lr in (1e-6, 2e-6):  # stopped by ASHA after the grace period
        [run] = by_lr[lr]
        assert len(store.history(run.info.run_id, "val/acc")) == 1
        assert run.data.tags["trainyard.trial.stopped_early"] == "true"
        assert "test/acc" not in run.data.metrics

    # The parent holds the spec, the space, the best trial and the table of all trials.
    assert parent.data.params["best.optimizer.lr"] == "0.3"
    assert parent.data.metrics["best_trial/test/acc"] > 0.9
    assert parent.data.metrics["sweep/trials"] == 4 and parent.data.metrics["sweep/stopped_early"] == 2
    assert parent.data.tags["trainyard.best_run_id"] in {run.info.run_id for run in by_lr[0.3]}
    artifacts = {a.path for a in store.client.list_artifacts(parent.info.run_id)}
    assert {"spec.yaml", "search_space.yaml", "trials.csv", "trials.json", "metric_vs_params.png"} <= artifacts
    rows = list(csv.DictReader(open(store.client.download_artifacts(parent.info.run_id, "trials.csv", str(tmp_path)))))
    assert sorted(row["status"] for row in rows) == ["FINISHED", "FINISHED", "STOPPED", "STOPPED"]
    # The reports (sweep/report.py): figures, and the trials ranked as an MLflow table.
    sizes = {a.path: a.file_size for a in store.client.list_artifacts(parent.info.run_id)}
    assert all(sizes.get(name, 0) > 5000 for name in ("parallel_coordinates.png", "learning_curves.png")), sizes
    top = json.load(open(store.client.download_artifacts(parent.info.run_id, "top_trials.json", str(tmp_path))))
    ranked = [dict(zip(top["columns"], row)) for row in top["data"]]
    assert [(row["rank"], row["status"], row["lr"]) for row in ranked[:2]] == [(1, "FINISHED", "0.3"), (2, "FINISHED", "0.3")]
    assert sorted(row["status"] for row in ranked) == ["FINISHED", "FINISHED", "STOPPED", "STOPPED"]
    assert "reports are incomplete" not in result.stderr

    # One line per trial, no Lightning banners or progress bars; logs where the summary says.
    assert "GPU available" not in result.stdout + result.stderr and "Epoch 0" not in result.stdout
    assert "4 trials: 2 finished, 2 stopped early by the scheduler, 0 failed" in result.stdout
    folder = next((tmp_path / "sweeps").iterdir())
    assert f"logs: {folder}/<trial id>/output.log" in result.stdout
    assert len(list(folder.glob("*/output.log"))) == 4 and (folder / "driver.log").is_file()


def test_optuna_searches_the_space(tmp_path, sweep_env):
    sweep = """\
    sweep:
      metric: val/loss
      mode: min
      num_samples: 3
      search: optuna
      space:
        optimizer.lr: {loguniform: [1.0e-3, 1.0]}
        model.params.hidden: {choice: [4, 16]}
    """
    result = run_sweep(blobs_spec(tmp_path, sweep, epochs=2), env=sweep_env)
    assert result.returncode == 0, result.stdout + result.stderr
    store = sqlite_store(tmp_path)
    [parent] = store.parents()
    children = store.children(parent.info.run_id)
    lrs = [float(run.data.params["optimizer.lr"]) for run in children]
    assert len(set(lrs)) == 3 and all(1e-3 <= lr <= 1.0 for lr in lrs)
    assert {run.data.params["model.params.hidden"] for run in children} <= {"4", "16"}
    best = min(children, key=lambda run: run.data.metrics["best/val/loss"])
    assert parent.data.tags["trainyard.best_run_id"] == best.info.run_id


def test_pbt_trials_keep_their_mutated_hyperparameters(tmp_path, sweep_env):
    """A trial that continues from another's checkpoint trains with its own, mutated learning
    rate, not the one in the checkpoint (the optimizer state of the other trial)."""
    sweep = """\
    sweep:
      metric: val/loss
      mode: min
      num_samples: 4
      max_concurrent: 4
      resources: {cpu: 0.5}
      # Synchronous: every trial reaches each interval before the bottom half copies the top.
      scheduler: {name: pbt, perturbation_interval: 1, quantile_fraction: 0.5, synch: true}
      space:
        optimizer.lr: {uniform: [0.001, 0.5]}
    """
    # A constant step schedule, so that Lightning's LearningRateMonitor logs train/lr.
    spec = blobs_spec(tmp_path, sweep, epochs=8, extra="schedule: {name: step, step_size: 100, gamma: 1.0}\n")
    result = run_sweep(spec, env=sweep_env)
    assert result.returncode == 0, result.stdout + result.stderr
    store = sqlite_store(tmp_path)
    [parent] = store.parents()
    checked = 0
    for run in store.children(parent.info.run_id):
        # pbt/optimizer.lr: the trial's own learning rate from the step where it took another's
        # checkpoint; train/lr: the optimizer's rate, logged as each epoch starts (before the
        # report that may bring the next exploit), so the rate of the epochs after step s.
        mutations = store.history(run.info.run_id, "pbt/optimizer.lr")
        lrs = store.history(run.info.run_id, "train/lr")
        for (step, lr), later in zip(mutations, mutations[1:] + [(10**9, None)]):
            applied = [value for s, value in lrs if step < s <= later[0]]
            assert all(value == pytest.approx(lr) for value in applied), (step, lr, lrs)
            checked += bool(applied)
    assert checked >= 1, f"no trial trained on after a PBT exploit: nothing was tested\n{result.stdout}"


def test_flagship_sweep_learns_the_digits(tmp_path, sweep_env):
    """experiments/cnn/lenet5_digits_sweep.yaml, smaller: the channel choices travel as lists."""
    from helpers import EXPERIMENTS

    spec = tmp_path / "lenet5_digits_sweep.yaml"
    spec.write_text((EXPERIMENTS / "cnn" / "lenet5_digits_sweep.yaml").read_text())
    result = run_sweep(spec, "--set", "sweep.num_samples=4", "--set", "trainer.max_epochs=4", env=sweep_env)
    assert result.returncode == 0, result.stdout + result.stderr
    store = sqlite_store(tmp_path)
    store.experiment = "cnn-digits-sweep"
    [parent] = store.parents()
    children = store.children(parent.info.run_id)
    assert len(children) == 4
    assert {run.data.params["model.params.channels"] for run in children} <= {"[6, 16]", "[16, 32]", "[32, 64]"}
    assert parent.data.metrics["best_trial/best/val/acc"] > 0.85
    assert "best trial" in result.stdout and "val/acc" in result.stdout
