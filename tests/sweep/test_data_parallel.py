"""A trial trained by two Ray Train workers (DDP over gloo on CPUs) learns as well as one worker."""

from __future__ import annotations

import math

import pytest

from conftest import run_sweep, sqlite_store

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

DIGITS = """\
name: digits-{workers}-workers
seed: 0
model: {{name: cnn.lenet5, params: {{channels: [16, 32], kernel_size: 3, activation: relu, pool: max, batch_norm: true}}}}
data: {{name: cnn.digits, params: {{batch_size: 32}}}}
optimizer: {{name: adam, lr: 0.003}}
trainer: {{max_epochs: 5, checkpoint: {{monitor: val/acc, mode: max}}}}
tracking: {{experiment: sweeps}}
sweep:
  metric: val/acc
  mode: max
  workers: {workers}
  space:
    optimizer.lr: {{grid: [0.003]}}
"""


def test_two_workers_reach_about_the_metric_of_one(tmp_path, sweep_env):
    accuracy, steps = {}, {}
    for workers in (1, 2):
        spec = tmp_path / f"digits-{workers}.yaml"
        spec.write_text(DIGITS.format(workers=workers))
        result = run_sweep(spec, env=sweep_env)
        assert result.returncode == 0, result.stdout + result.stderr
        store = sqlite_store(tmp_path)
        [run] = [run for run in store.children() if run.data.tags["trainyard.trial.workers"] == str(workers)]
        assert run.info.status == "FINISHED"
        accuracy[workers] = run.data.metrics["test/acc"]
        steps[workers] = [step for step, _ in store.history(run.info.run_id, "val/acc")]
        if workers == 2:  # the workers' output is kept next to the trial's
            folder = next((tmp_path / "sweeps").glob("digits-2-workers-*"))
            assert sorted(path.name for path in folder.glob("*/rank*.log")) == ["rank0.log", "rank1.log"]
    # Each worker sees half of every epoch (a DistributedSampler shard): half the optimiser steps.
    assert len(steps[1]) == len(steps[2]) == 5
    per_epoch = {workers: steps[workers][0] + 1 for workers in steps}
    assert per_epoch[2] == math.ceil(per_epoch[1] / 2), per_epoch
    assert accuracy[1] > 0.93 and accuracy[2] > 0.93
    assert abs(accuracy[2] - accuracy[1]) < 0.03, accuracy
