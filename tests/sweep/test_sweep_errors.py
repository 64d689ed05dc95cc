"""Sweep errors are caught before Ray starts: one line each, exit status 2, nothing written."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from trainyard.cli import app

SPEC = """\
name: lenet5-test
model: {name: cnn.lenet5}
data: {name: cnn.digits}
trainer: {max_epochs: 2}
"""
SWEEP = SPEC + """\
sweep:
  metric: val/acc
  mode: max
  space:
    optimizer.lr: {loguniform: [1.0e-4, 1.0e-1]}
"""


def sweep(tmp_path, text: str, *args: str):
    (tmp_path / "lenet5.yaml").write_text(text)
    return CliRunner().invoke(app, ["sweep", "lenet5.yaml", *args])


def assert_stopped_before_ray(result, lines: list[str], tmp_path) -> None:
    import ray

    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == lines
    assert not ray.is_initialized()
    assert not (tmp_path / "sweeps").exists() and not (tmp_path / "mlflow.db").exists()


CASES = {
    "no sweep section": (
        SPEC, [], ["lenet5.yaml: sweep: this spec has no sweep section (trainyard run trains it once)"]),
    "search key that is not a spec field": (
        SWEEP.replace("optimizer.lr:", "optimizer.lrr:"), [],
        ["lenet5.yaml: sweep.space.optimizer.lrr: not a field of this spec (did you mean 'optimizer.lr'?)"]),
    "bad bounds": (
        SWEEP.replace("[1.0e-4, 1.0e-1]", "[1.0e-1, 1.0e-4]"), [],
        ["lenet5.yaml: sweep.space.optimizer.lr: loguniform needs low < high, got [0.1, 0.0001]"]),
    "metric the model never logs": (
        SWEEP.replace("metric: val/acc", "metric: val/f1"), [],
        ["lenet5.yaml: sweep.metric: cnn.lenet5 never logs 'val/f1' (did you mean 'val/acc'?); it logs train/loss, train/acc, val/loss, "
         "val/acc, test/loss, test/acc"]),
    "metric measured only after training": (
        SWEEP.replace("metric: val/acc", "metric: test/acc"), [],
        ["lenet5.yaml: sweep.metric: test/acc is measured once, after training, but schedulers and searchers "
         "compare trials every epoch: use a val/ metric"]),
    "data parallelism asked of the trainer": (
        SWEEP, ["--set", "trainer.devices=2"],
        ["lenet5.yaml: trainer.devices: a trial worker trains on one device; use sweep.workers for data-parallel "
         "trials (set with --set)"]),
    "pbt with several workers": (
        SWEEP + "  workers: 2\n  scheduler: {name: pbt}\n", [],
        ["lenet5.yaml: sweep: pbt needs workers: 1 (a multi-worker trial's checkpoints are kept by Ray Train, "
         "out of reach of Tune's exploit step)"]),
    "pbt perturbing between checkpoints": (
        SWEEP + "  checkpoint_every: 2\n  scheduler: {name: pbt, perturbation_interval: 3}\n", [],
        ["lenet5.yaml: sweep: pbt's perturbation_interval (3) must be a multiple of checkpoint_every (2): an "
         "exploiting trial loads the other's latest checkpoint"]),
    "a GPU trainer whose workers get no GPU": (
        SWEEP, ["--set", "trainer.accelerator=gpu"],
        ["lenet5.yaml: sweep.resources.gpu: trainer.accelerator is gpu, but a trial worker gets no GPU: set "
         "sweep.resources.gpu (1: a whole GPU)"]),
    "GPUs held by CPU trials": (
        SWEEP + "  resources: {gpu: 1}\n", ["--set", "trainer.accelerator=cpu"],
        ["lenet5.yaml: sweep.resources.gpu: 1 GPU per trial worker, but trainer.accelerator is cpu: the trials "
         "would hold GPUs and not use them"]),
    "an accelerator Ray does not place": (
        SWEEP, ["--set", "trainer.accelerator=mps"],
        ["lenet5.yaml: trainer.accelerator: mps: a sweep places trials by Ray's CPU and GPU resources; use cpu, "
         "gpu or auto (set with --set)"]),
    "more than a GPU per worker": (
        SWEEP + "  resources: {gpu: 2}\n", [],
        ["lenet5.yaml: sweep.resources.gpu: expected a number between 0 and 1, got 2"]),
    "a tracking server that cannot be reached": (
        SWEEP + "tracking: {uri: 'http://127.0.0.1:9'}\n", [], None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_sweep_errors_stop_before_ray_starts(case, tmp_path):
    text, args, lines = CASES[case]
    result = sweep(tmp_path, text, *args)
    if lines is None:  # the reason comes from the network stack: check the start of the line
        assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
        assert result.stderr.startswith("lenet5.yaml: tracking.uri: cannot reach the tracking server http://127.0.0.1:9")
        lines = result.stderr.splitlines()
    assert_stopped_before_ray(result, lines, tmp_path)


def test_an_algorithm_cannot_be_scheduled_by_epochs(tmp_path, use_plugins):
    use_plugins("example")
    text = """\
    name: bandit-sweep
    env: {name: example.bandit}
    algorithm: {name: example.greedy}
    sweep:
      metric: test/mean_reward
      mode: max
      workers: 2
      scheduler: {name: asha}
      space:
        algorithm.params.epsilon: {uniform: [0.0, 0.5]}
    """
    import textwrap

    result = sweep(tmp_path, textwrap.dedent(text))
    assert_stopped_before_ray(result, [
        "lenet5.yaml: sweep.scheduler.name: asha compares trials every epoch, but an algorithm reports once, "
        "when it ends: use fifo",
        "lenet5.yaml: sweep.workers: only Lightning models train data-parallel; an algorithm runs in one process",
    ], tmp_path)


def test_resume_takes_no_overrides(tmp_path):
    result = sweep(tmp_path, SWEEP, "--resume", "--set", "optimizer.lr=0.1")
    assert_stopped_before_ray(result, ["lenet5.yaml: --set cannot be combined with --resume: a sweep resumes with "
                                       "the values it started with"], tmp_path)


def test_resume_needs_a_sweep_to_resume(tmp_path):
    result = sweep(tmp_path, SWEEP, "--resume")
    assert_stopped_before_ray(result, [f"lenet5.yaml: --resume: no sweep of lenet5-test to resume in {tmp_path}/sweeps"],
                              tmp_path)
