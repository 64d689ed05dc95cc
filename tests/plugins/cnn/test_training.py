"""The CNN family learns: the flagship LeNet-5 spec, VGG and ResNet v2, 3-D volumes; and every
example spec validates and runs."""

from __future__ import annotations

import statistics

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from cnn_files import write_cifar, write_mnist
from helpers import EXPERIMENTS
from trainyard.cli import app
from trainyard.run import run_experiment
from trainyard.tracking import tracking_uri
from trainyard.validate import load_experiment

QUIET = ["trainer.progress_bar=false"]


def run(spec: str, *overrides: str):
    return run_experiment(load_experiment(EXPERIMENTS / "cnn" / f"{spec}.yaml", [*QUIET, *overrides]), quiet=True)


def history(run_id: str, metric: str) -> list[float]:
    return [m.value for m in sorted(MlflowClient(tracking_uri()).get_metric_history(run_id, metric),
                                    key=lambda m: m.step)]


@pytest.mark.slow
def test_lenet5_flagship_reaches_97_percent_on_the_digits():
    result = run("lenet5_digits")  # the spec exactly as `make demo` runs it
    assert result.metrics["test/acc"] >= 0.97


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["vgg_digits", "resnet_digits"])
def test_vgg_and_resnet_v2_train_with_falling_loss(spec):
    result = run(spec, "trainer.max_epochs=4", "tracking.log_model=false")
    train_loss = history(result.run_id, "train/loss")
    val_loss = history(result.run_id, "val/loss")
    assert len(val_loss) == 4
    assert statistics.mean(train_loss[-3:]) < 0.5 * statistics.mean(train_loss[:3])
    assert min(val_loss[1:]) < val_loss[0]
    assert result.metrics["test/acc"] > 0.9


def test_resnet_spec_is_v2():
    experiment = load_experiment(EXPERIMENTS / "cnn" / "resnet_digits.yaml")
    assert experiment.model.params.version == "v2"


@pytest.mark.slow
def test_3d_resnet_learns_the_volumes():
    result = run("resnet3d_volumes", "trainer.max_epochs=4", "tracking.log_model=false")
    assert result.metrics["test/acc"] > 0.8  # three classes: chance is 1/3


SPECS = sorted(path.relative_to(EXPERIMENTS).as_posix() for path in EXPERIMENTS.glob("*/*.yaml"))


@pytest.mark.parametrize("spec", SPECS)
def test_every_example_spec_validates(spec, monkeypatch):
    # From the repository root, as the specs' comments run them (their relative paths, such as
    # experiments/rl/gamblers_ruin.csv, are relative to the current folder).
    monkeypatch.chdir(EXPERIMENTS.parent)
    result = CliRunner().invoke(app, ["validate", str(EXPERIMENTS / spec)])
    assert result.exit_code == 0, result.output


def test_alexnet_spec_runs():
    result = run("alexnet_digits", "trainer.max_epochs=2", "tracking.log_model=false")
    assert result.status == "FINISHED"


@pytest.mark.parametrize("spec", ["lenet5_mnist", "resnet_cifar10"])
def test_file_based_specs_run_on_files_in_the_real_format(spec, tmp_path):
    if spec == "lenet5_mnist":
        write_mnist(tmp_path / "files", n_train=60, n_test=20, gz=True)
    else:
        write_cifar(tmp_path / "files" / "cifar-10-batches-bin", per_batch=12)
    result = run(spec, f"data.params.root={tmp_path / 'files'}", "data.params.download=false",
                 "data.params.num_workers=0", "trainer.max_epochs=1", "tracking.log_model=false")
    assert result.status == "FINISHED" and 0.0 <= result.metrics["test/acc"] <= 1.0
