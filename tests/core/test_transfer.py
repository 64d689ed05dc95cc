"""Transfer learning: init_from a run, a runs:/ URI or a checkpoint file; freeze submodules."""

from __future__ import annotations

import os
import textwrap

import pytest
import torch
from mlflow import MlflowClient
from typer.testing import CliRunner

from trainyard.cli import app
from trainyard.run import build, run_experiment
from trainyard.validate import load_experiment

# Pre-train on digits 0-4, then learn digits 5-9 with the convolutional features kept fixed:
# only the dense layers learn, so what the features are worth decides the result.
MODEL = "{channels: [16, 32], kernel_size: 3, activation: relu, pool: max, batch_norm: true}"

PRETRAIN = f"""\
name: pretrain
seed: 0
model: {{name: cnn.lenet5, params: {MODEL}}}
data:
  name: cnn.digits
  params: {{classes: [0, 1, 2, 3, 4]}}
optimizer: {{name: adam, lr: 0.005}}
trainer:
  max_epochs: 8
  progress_bar: false
  checkpoint: {{monitor: val/acc, mode: max}}
"""

FINETUNE = f"""\
name: finetune
seed: 0
model:
  name: cnn.lenet5
  params: {MODEL}
  freeze: [net.features]
data:
  name: cnn.digits
  params: {{classes: [5, 6, 7, 8, 9]}}
optimizer: {{name: adam, lr: 0.005}}
trainer:
  max_epochs: 2
  progress_bar: false
"""


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def pretrained(tmp_path):
    result = run_experiment(load_experiment(write(tmp_path, "pretrain.yaml", PRETRAIN)), quiet=True)
    assert result.metrics["test/acc"] > 0.95
    return result.run_id


@pytest.mark.slow
def test_finetuning_a_pretrained_network(pretrained, tmp_path):
    finetune = write(tmp_path, "finetune.yaml", FINETUNE)
    scratch = run_experiment(load_experiment(finetune), quiet=True)

    experiment = load_experiment(finetune, [f"model.init_from={pretrained}"])
    model = build(experiment).model
    pretrained_features = {k: v.clone() for k, v in model.net.features.state_dict().items()}
    tuned = run_experiment(experiment, quiet=True)

    # Pre-trained features beat random frozen features on the new classes (measured here:
    # about 0.90 against 0.76 after two epochs).
    assert tuned.metrics["test/acc"] > 0.85
    assert tuned.metrics["test/acc"] > scratch.metrics["test/acc"] + 0.08
    every_tensor = len(model.state_dict())  # same head size (5 classes): every tensor loads
    assert tuned.notes == [f"loaded {every_tensor} tensors from {pretrained}", "froze net.features"]

    run = MlflowClient().get_run(tuned.run_id)
    assert run.data.params["model.init_from"] == pretrained
    assert run.data.tags["trainyard.init"] == f"loaded {every_tensor} tensors from {pretrained}; froze net.features"

    # The frozen features are exactly the pre-trained ones after fine-tuning.
    checkpoint = torch.load(_download_best(tuned.run_id, tmp_path), weights_only=True)["state_dict"]
    for name, tensor in pretrained_features.items():
        assert torch.equal(checkpoint[f"net.features.{name}"], tensor), name


def _download_best(run_id: str, tmp_path) -> str:
    import mlflow

    return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="checkpoints/best.ckpt",
                                               dst_path=str(tmp_path / run_id))


@pytest.mark.slow
def test_init_from_uri_and_checkpoint_path(pretrained, tmp_path):
    finetune = write(tmp_path, "finetune.yaml", FINETUNE)
    path = _download_best(pretrained, tmp_path)
    for source in (f"runs:/{pretrained}/checkpoints/best.ckpt", f"runs:/{pretrained}", path):
        built = build(load_experiment(finetune, [f"model.init_from={source}"]))
        assert built.notes[0] == f"loaded {len(built.model.state_dict())} tensors from {source}"
    # a different head size: the matching tensors load, the others keep fresh weights
    built = build(load_experiment(finetune, [f"model.init_from={path}", "data.params.classes=[1, 2, 3]"]))
    assert "kept new weights for 2 with other shapes" in built.notes[0]


def test_bad_init_from_is_bad_input(tmp_path):
    finetune = write(tmp_path, "finetune.yaml", FINETUNE)
    cases = {
        "0123456789abcdef0123456789abcdef": "finetune.yaml: model.init_from: cannot fetch run "
                                            "0123456789abcdef0123456789abcdef: there is no tracking store at sqlite:///",
        "nothing-here.ckpt": "finetune.yaml: model.init_from: 'nothing-here.ckpt' is neither a checkpoint file, "
                             "an MLflow run id nor a runs:/ URI",
    }
    for source, expected in cases.items():
        result = CliRunner().invoke(app, ["validate", str(finetune), "--set", f"model.init_from={source}"])
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith(expected), result.stderr
    assert not (tmp_path / "mlflow.db").exists()
    # with a store that lacks the run
    MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()
    result = CliRunner().invoke(app, ["validate", str(finetune), "--set", f"model.init_from={'f' * 32}"])
    assert result.exit_code == 2
    assert result.stderr.strip().endswith(f"Run with id={'f' * 32} not found"), result.stderr


def test_checkpoints_are_loaded_with_weights_only(tmp_path):
    marker = tmp_path / "code-ran"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": {"net.features.0.weight": Exploit()}}, tmp_path / "evil.ckpt")
    finetune = write(tmp_path, "finetune.yaml", FINETUNE)
    result = CliRunner().invoke(app, ["validate", str(finetune), "--set", f"model.init_from={tmp_path / 'evil.ckpt'}"])
    assert result.exit_code == 2
    assert "model.init_from: cannot read" in result.stderr and "as weights" in result.stderr
    assert not marker.exists()


def test_freeze_names_must_exist(tmp_path):
    finetune = write(tmp_path, "finetune.yaml", FINETUNE)
    result = CliRunner().invoke(app, ["validate", str(finetune), "--set", "model.freeze=[net.featurez]"])
    assert result.exit_code == 2
    assert result.stderr.startswith("finetune.yaml: model.freeze: no submodule 'net.featurez'; available: ")
    assert "net.features" in result.stderr
