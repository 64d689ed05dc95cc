"""The representation-learning family learns: autoencoders against PCA, sparse codes at their
target, denoising, the VAE's bound; pre-trained encoders carry into classifiers; bad input is
one line and exit 2 with nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from typer.testing import CliRunner

from cnn_files import write_mnist
from helpers import EXPERIMENTS
from trainyard.build import build
from trainyard.cli import app
from trainyard.run import run_experiment
from trainyard.tracking import tracking_uri
from trainyard.validate import load_experiment

QUIET = ["trainer.progress_bar=false", "tracking.log_model=false"]


def run(spec: str, *overrides: str):
    return run_experiment(load_experiment(EXPERIMENTS / "repr" / f"{spec}.yaml", [*QUIET, *overrides]), quiet=True)


def artifacts(run_id: str, folder: str) -> set[str]:
    return {item.path.split("/")[-1] for item in MlflowClient(tracking_uri()).list_artifacts(run_id, folder)}


def history(run_id: str, metric: str) -> list[float]:
    return [m.value for m in sorted(MlflowClient(tracking_uri()).get_metric_history(run_id, metric), key=lambda m: m.step)]


@pytest.mark.slow
def test_a_two_unit_bottleneck_beats_pca_with_two_components(one_thread):
    result = run("autoencoder_digits", "trainer.max_epochs=15")
    metrics = MlflowClient(tracking_uri()).get_run(result.run_id).data.metrics  # as recorded
    # Hinton & Salakhutdinov's comparison, in one run: the same test images, the same code size.
    assert metrics["test/mse"] < 0.85 * metrics["test/pca_mse"]
    assert metrics["test/probe_acc"] > metrics["test/pca_probe_acc"]
    assert artifacts(result.run_id, "reports") >= {"reconstructions.png", "codes.png"}
    # The reconstructions were logged at each validation, as a step-indexed image series.
    assert len([name for name in artifacts(result.run_id, "images") if name.endswith(".png")]) >= 15


@pytest.mark.slow
def test_a_sparse_code_reaches_its_target_mean_activation(one_thread):
    result = run("sparse_autoencoder_digits", "trainer.max_epochs=20")
    rho = 0.05
    assert abs(result.metrics["test/mean_activation"] - rho) < 0.1 * rho
    assert "mean_activations.png" in artifacts(result.run_id, "reports")


@pytest.mark.slow
def test_an_l1_code_is_selective(one_thread):
    metrics = run("sparse_autoencoder_digits", "model.params.sparsity.penalty=l1", "model.params.sparsity.weight=0.05",
                  "trainer.max_epochs=20").metrics
    # Of 100 ReLU units, a few fire for any one image (7.7% after 40 epochs), and not none.
    assert 0.01 < metrics["test/active_fraction"] < 0.25
    assert metrics["test/mse"] < 2.0  # and the code still describes the images


@pytest.mark.slow
def test_a_denoising_autoencoder_removes_most_of_the_noise(one_thread):
    metrics = run("denoising_autoencoder_digits", "trainer.max_epochs=10").metrics
    assert metrics["test/denoised_mse"] < 0.5 * metrics["test/corrupted_mse"]


def independent_pixels_nats() -> float:
    """-log p(x) in nats per image of the best model without a latent code: one Bernoulli per
    pixel, at that pixel's mean (about 27.1 nats on the digits)."""
    from sklearn.datasets import load_digits

    x = load_digits().data / 16.0  # (1797, 64) in [0, 1]
    p = x.mean(axis=0).clip(1e-6, 1 - 1e-6)
    return float(-(x * np.log(p) + (1 - x) * np.log(1 - p)).sum(axis=1).mean())


@pytest.mark.slow
def test_the_vae_bound_beats_independent_pixels_and_is_reported_in_nats(one_thread):
    result = run("vae_digits", "trainer.max_epochs=12", "model.params.code=8", "model.params.kl_warmup_steps=0")
    metrics = result.metrics
    assert metrics["test/nelbo"] == pytest.approx(metrics["test/recon"] + metrics["test/kl"], rel=1e-4)
    assert metrics["test/kl"] > 1.0  # the code carries information: no posterior collapse
    assert metrics["test/nelbo"] < independent_pixels_nats() - 1.0  # 25.2 against 27.1 with seed 0
    nelbo = history(result.run_id, "val/nelbo")
    assert nelbo[-1] < nelbo[0]
    assert artifacts(result.run_id, "reports") >= {"prior_samples.png", "latent_traversals.png", "codes.png"}


@pytest.mark.slow
def test_kl_warm_up_raises_beta_from_zero(one_thread):
    result = run("vae_digits", "trainer.max_epochs=3", "model.params.kl_warmup_steps=100",
                 "model.params.beta=4", "trainer.log_every_n_steps=1")
    beta = history(result.run_id, "train/beta")
    assert beta[0] < 0.1 and max(beta) == 4.0 and beta == sorted(beta)


IDX_MODELS = {
    "gaussian VAE": ("vae_digits", ["model.params.decoder=gaussian"], "test/nelbo"),
    # The probe sees fewer training images than PCA does.
    "convolutional autoencoder": ("autoencoder_digits", ["model.name=repr.conv_autoencoder",
                                                         "model.params={code: 8, probe_samples: 20}"], "test/pca_probe_acc"),
}


@pytest.mark.slow
@pytest.mark.parametrize("model", IDX_MODELS)
def test_28x28_idx_files(model, one_thread, tmp_path):
    spec, overrides, metric = IDX_MODELS[model]
    write_mnist(tmp_path / "idx", n_train=60, n_test=20, gz=True)
    result = run(spec, "data.name=cnn.mnist", f"data.params.root={tmp_path / 'idx'}", "data.params.variant=fashion_mnist",
                 "trainer.max_epochs=2", *overrides)
    assert result.status == "FINISHED" and np.isfinite(result.metrics[metric]) and np.isfinite(result.metrics["test/mse"])


@pytest.mark.slow
def test_lenet5_from_a_pretrained_encoder_beats_lenet5_from_scratch_on_20_labels_per_class(one_thread):
    pretrained = run("pretrain_autoencoder_digits")
    scratch = run("classifier_few_labels")
    tuned = run("classifier_few_labels", f"model.init_from={pretrained.run_id}")
    assert tuned.notes[0].startswith(f"loaded 4 tensors from {pretrained.run_id}")  # two convolutions
    assert tuned.metrics["test/acc"] > scratch.metrics["test/acc"]


@pytest.mark.slow
def test_a_convolutional_encoder_carries_into_lenet5(one_thread, tmp_path):
    conv = run("autoencoder_digits", "model.name=repr.conv_autoencoder", "model.params={code: 8}",
               "trainer.max_epochs=1")
    lenet = tmp_path / "lenet.yaml"
    lenet.write_text((EXPERIMENTS / "cnn" / "lenet5_digits.yaml").read_text())
    overrides = [f"model.init_from={conv.run_id}", "model.init_layers={encoder.features: net.features}",
                 "model.params.channels=[6, 16]", "model.params.kernel_size=5", "model.params.batch_norm=false",
                 "model.params.activation=tanh"]
    model = build(load_experiment(lenet, overrides)).model
    checkpoint = MlflowClient(tracking_uri()).download_artifacts(conv.run_id, "checkpoints/best.ckpt", str(tmp_path))
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    features = {name: tensor for name, tensor in state.items() if name.startswith("encoder.features.")}
    assert len(features) == 4  # two convolutions' weights and biases
    for name, tensor in features.items():
        assert torch.equal(model.state_dict()[name.replace("encoder.features.", "net.features.")], tensor)

    # Other kernel sizes do not fit: bad input naming the layers, before anything runs.
    result = CliRunner().invoke(app, ["validate", str(lenet), *[arg for o in overrides[:3] for arg in ("--set", o)]])
    assert result.exit_code == 2
    assert "model.init_from: the layers do not fit: encoder.features.0.0.weight (6, 1, 5, 5) does not fit " \
           "net.features.0.0.weight (6, 1, 3, 3)" in result.stderr


BAD = {
    "model.params.code=64": "model.params: a code of 64 units is not a bottleneck for inputs of 64 "
                            "values (1x8x8); make it smaller or set undercomplete: false",
    "model.params.sparsity.target=1.5": "model.params.sparsity.target",
    "model.params.noise.kind=speckle": "model.params.noise.kind",
}


@pytest.mark.parametrize("override", BAD)
def test_bad_autoencoder_params_are_one_line_and_exit_2(override):
    result = CliRunner().invoke(app, ["run", str(EXPERIMENTS / "repr" / "autoencoder_digits.yaml"), "--set", override])
    assert result.exit_code == 2
    assert BAD[override] in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not Path("mlflow.db").exists() and not Path("mlruns").exists()


@pytest.mark.slow
def test_an_encoder_that_does_not_fit_the_classifier_is_exit_2_naming_the_layers(one_thread):
    pretrained = run("autoencoder_digits", "trainer.max_epochs=1")  # hidden [256, 128], code 2
    overrides = ["model.name=repr.classifier", "model.params={hidden: [256, 128], code: 32}",
                 "model.init_layers={encoder: net.encoder}", f"model.init_from={pretrained.run_id}"]
    result = CliRunner().invoke(app, ["run", str(EXPERIMENTS / "repr" / "classifier_few_labels.yaml"),
                                      *[arg for override in overrides for arg in ("--set", override)]])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "model.init_from: the layers do not fit: encoder.layers.5.weight (2, 128) does not fit " \
           "net.encoder.layers.5.weight (32, 128)" in result.stderr
    client = MlflowClient(tracking_uri())
    runs = client.search_runs([experiment.experiment_id for experiment in client.search_experiments()])
    assert [run.info.run_id for run in runs] == [pretrained.run_id]  # the refused run was never created

    # The same encoder into a classifier of its shape loads every encoder tensor.
    fitting = [*overrides[:3], "model.params={hidden: [256, 128], code: 2}", overrides[3]]
    built = build(load_experiment(EXPERIMENTS / "repr" / "classifier_few_labels.yaml", fitting))
    assert built.notes[0].startswith(f"loaded 6 tensors from {pretrained.run_id}")
