"""The GAN family: VEEGAN's measures and the losses on known cases; a short run on the ring covers
the modes and is recorded with its reports; images are measured by FID through a trainyard
classifier; data-parallel training keeps both networks' replicas equal; bad input is one line
and exit 2 with nothing written.

Every gan component passes the conformance kit in tests/core/test_conformance.py, which is
parametrised over every installed component; every spec in experiments/gan validates in
tests/plugins/cnn/test_training.py, parametrised over experiments/*/*.yaml.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image
from typer.testing import CliRunner

from cnn_files import write_mnist
from helpers import EXPERIMENTS, subprocess_env, trainyard_command
from trainyard.build import build
from trainyard.errors import SpecError
from trainyard.cli import app
from trainyard.run import run_experiment
from trainyard.testing import components_of
from trainyard.tracking import tracking_uri
from trainyard.validate import load_experiment
from trainyard_gan import losses
from trainyard_gan.metrics import CollapseDetector, class_shares, mode_coverage
from trainyard_gan.points import grid, ring

QUIET = ["trainer.progress_bar=false", "tracking.log_model=false"]
SPECS = EXPERIMENTS / "gan"


def run(spec: str, *overrides: str):
    return run_experiment(load_experiment(SPECS / f"{spec}.yaml", [*QUIET, *overrides]), quiet=True)


def artifacts(run_id: str, folder: str) -> set[str]:
    return {item.path.split("/")[-1] for item in MlflowClient(tracking_uri()).list_artifacts(run_id, folder)}


def history(run_id: str, metric: str) -> list[float]:
    found = MlflowClient(tracking_uri()).get_metric_history(run_id, metric)
    return [m.value for m in sorted(found, key=lambda m: m.step)]


def test_the_kit_checks_every_gan_component():
    assert set(components_of("gan")) == {"gan.mlp", "gan.dcgan", "gan.conditional", "gan.ring", "gan.grid",
                                         "gan.spiral"}


# --- measures and losses on known cases ------------------------------------------------------


def test_real_points_cover_every_mode_with_high_quality_and_no_kl():
    mixture = ring(8, 2.0, 0.02)
    points, _ = mixture.sample(20_000, np.random.default_rng(0))
    found = mode_coverage(torch.from_numpy(points), torch.from_numpy(mixture.centres), mixture.std)
    assert found.modes_covered == 8
    # Within 3 sigma of a 2-D Gaussian: P(chi2 with 2 degrees of freedom <= 9) = 1 - e^-4.5.
    assert found.high_quality == pytest.approx(1 - math.exp(-4.5), abs=0.003)
    assert found.kl_modes < 0.001


def test_a_collapsed_generator_covers_one_mode_at_kl_log_k():
    mixture = grid(5, 2.0, 0.05)
    centres = torch.from_numpy(mixture.centres)
    on_one = centres[7] + 0.01 * torch.randn(2500, 2, generator=torch.Generator().manual_seed(0))
    found = mode_coverage(on_one, centres, mixture.std)
    assert (found.modes_covered, found.high_quality) == (1, 1.0)  # VEEGAN's "GAN: 1 mode, 99.3%"
    assert found.kl_modes == pytest.approx(math.log(25))
    between = mode_coverage(centres[:4] + 1.0, centres, mixture.std)  # halfway between modes
    assert (between.modes_covered, between.high_quality, between.kl_modes) == (0, 0.0, pytest.approx(math.log(25)))


def test_a_mode_needs_a_quarter_of_its_fair_share_to_count_as_covered():
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    few = torch.cat([torch.zeros(88, 2), centres[1].expand(12, 2)])  # 12 of 100 on the second mode
    assert mode_coverage(few, centres, 0.1).modes_covered == 1  # below 100 / 2 modes / 4 = 12.5
    enough = torch.cat([torch.zeros(87, 2), centres[1].expand(13, 2)])
    assert mode_coverage(enough, centres, 0.1).modes_covered == 2


def test_class_shares_and_collapse_detection():
    shares = class_shares(torch.tensor([0] * 50 + [1] * 50), 10)
    assert shares["class_coverage"] == 2 and shares["min_class_share"] == 0.0
    assert shares["class_entropy"] == pytest.approx(math.log(2))
    detector = CollapseDetector(modes=8, drop=0.25)  # a fall of 2 modes or more
    assert [detector.update(covered, step) for step, covered in enumerate([3, 8, 7, 6, 8])] == \
        [False, False, False, True, False]
    assert detector.first == "at step 3: 6 modes covered, down from 8"


def test_the_losses_at_known_points():
    confident = torch.full((4, 1), 20.0)  # the discriminator says "real" with certainty
    # The original minimax generator loss saturates when the discriminator rejects the samples;
    # the non-saturating one does not (Goodfellow et al. 2014, section 3).
    rejected = (-confident).requires_grad_(True)
    (minimax,) = torch.autograd.grad(losses.generator_loss("minimax", rejected), rejected)
    (non_saturating,) = torch.autograd.grad(losses.generator_loss("non_saturating", rejected), rejected)
    assert minimax.abs().max() < 1e-8 < 0.2 < non_saturating.abs().min()
    assert losses.discriminator_loss("hinge", confident, -confident) == 0
    # A critic with a unit-norm gradient everywhere has no gradient penalty.
    critic = torch.nn.Linear(2, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[0.6, 0.8]]))
    assert losses.gradient_penalty(critic, torch.randn(8, 2), torch.randn(8, 2)).item() == pytest.approx(0.0, abs=1e-10)
    assert [float(a) for a in losses.accuracy("wgan_gp", confident + 5, confident)] == [1.0, 1.0]


def test_dcgan_takes_the_image_size_the_data_gives(tmp_path):
    write_mnist(tmp_path / "idx", n_train=20, n_test=10, gz=True)
    mnist = ["data.name=cnn.mnist", f"data.params={{root: {tmp_path / 'idx'}, batch_size: 8}}"]
    conditional = ["model.name=gan.conditional", "model.params.network=dcgan"]
    # 8x8 digits halve twice to 2x2, 28x28 IDX images to 7x7, and back.
    for data, shape in (([], (1, 8, 8)), (mnist, (1, 28, 28))):
        for model_overrides in ([], conditional):
            model = build(load_experiment(SPECS / "dcgan_digits.yaml", [*data, *model_overrides])).model
            z = torch.randn(3, model.params.noise_dim)
            images = model(z, torch.arange(3)) if model.classes else model(z)
            assert images.shape == (3, *shape) and 0 <= images.min() and images.max() <= 1


# --- training runs ---------------------------------------------------------------------------

# The spec's networks and batches for a tenth of its steps, with a stronger R1 penalty: 7 of
# the 8 modes, half the points of high quality (seed 0).
SHORT_RING = ["trainer.max_steps=1000", "trainer.val_check_interval=500", "model.params.r1=0.1"]


@pytest.mark.slow
def test_a_short_run_on_the_ring_covers_six_modes_and_records_its_reports(one_thread):
    result = run("ring_nonsaturating", *SHORT_RING)
    client = MlflowClient(tracking_uri())
    recorded = client.get_run(result.run_id)
    assert recorded.data.metrics["test/modes_covered"] >= 6
    assert recorded.data.tags["gan.mode_collapse"] == "none"
    assert len(history(result.run_id, "val/modes_covered")) == 2
    assert {"train/d_loss", "train/g_loss", "train/d_acc_real", "train/d_acc_fake", "train/d_grad_norm",
            "train/g_grad_norm", "val/high_quality", "val/kl_modes", "val/mode_collapse"} <= set(recorded.data.metrics)
    assert artifacts(result.run_id, "reports") == {"samples.png", "discriminator.png", "training.gif"}
    with Image.open(client.download_artifacts(result.run_id, "reports/training.gif")) as gif:
        assert gif.n_frames == 2  # one frame per validation
    # The samples at each validation, as a step-indexed image series.
    assert len([name for name in artifacts(result.run_id, "images") if name.endswith(".png")]) == 2


@pytest.mark.slow
def test_packing_and_the_gradient_penalty_train_together(one_thread):
    """PacGAN's packs of 4 points judged as one, with the critic's gradient penalty on packs."""
    result = run("ring_wgan_gp", "model.params.pack=4", "model.params.hidden=[32, 32]", "model.params.eval_samples=100",
                 "trainer.max_steps=20", "trainer.val_check_interval=10", "trainer.log_every_n_steps=5")
    penalty = history(result.run_id, "train/gradient_penalty")
    assert len(penalty) == 4 and all(math.isfinite(value) for value in penalty)
    model = build(load_experiment(SPECS / "ring_wgan_gp.yaml", ["model.params.pack=4"])).model
    assert model.judge(torch.randn(10, 2)).shape == (2, 1)  # 10 points: two packs, two sit out


def lenet5_run(*overrides: str):
    """A trainyard classifier run, for FID's features: LeNet-5, briefly trained."""
    settings = [*QUIET, "trainer.max_epochs=2", "trainer.early_stopping=null", *overrides]
    return run_experiment(load_experiment(EXPERIMENTS / "cnn" / "lenet5_digits.yaml", settings), quiet=True)


SHORT_IMAGES = ["trainer.max_steps=60", "trainer.val_check_interval=30", "model.params.eval_samples=200"]


@pytest.mark.slow
def test_dcgan_on_digits_is_measured_by_fid_on_the_features_of_a_named_classifier_run(one_thread):
    classifier = lenet5_run()
    result = run("dcgan_digits", f"model.params.fid_classifier={classifier.run_id}", *SHORT_IMAGES)
    fid = history(result.run_id, "val/fid")
    assert len(fid) == 2 and all(math.isfinite(value) and value > 0 for value in fid)
    metrics = result.metrics
    # The generator learns: FID falls from the first validation to the second (seeds 0, 1, 2:
    # 131 -> 125, 156 -> 134, 128 -> 120).
    assert fid[1] < fid[0]
    assert 0 <= metrics["test/class_entropy"] <= math.log(10) + 1e-6
    assert artifacts(result.run_id, "reports") == {"samples.png"}
    assert len([name for name in artifacts(result.run_id, "images") if name.endswith(".png")]) == 2
    assert not list(Path(".trainyard-cache").rglob("lenet5.pt"))  # the named run's features, not a cached net


@pytest.mark.slow
def test_a_conditional_gan_on_digits_is_judged_by_a_cached_classifier(one_thread):
    result = run("conditional_digits", *SHORT_IMAGES)
    assert 0 <= result.metrics["test/cond_acc"] <= 1 and math.isfinite(result.metrics["test/fid"])
    [cached] = Path(".trainyard-cache").rglob("lenet5.pt")  # trained once on the digits, then read back
    saved = torch.load(cached, weights_only=True)
    assert saved["test_acc"] > 0.9
    modified = cached.stat().st_mtime_ns
    run("conditional_digits", "trainer.max_steps=2", "trainer.val_check_interval=2", "model.params.eval_samples=100")
    assert cached.stat().st_mtime_ns == modified


@pytest.mark.slow
def test_data_parallel_training_keeps_both_replicas_equal(tmp_path):
    """devices: 2 on CPU: Lightning starts a second process (DDP over gloo); the module logs the
    largest difference of any weight between the processes, for each network."""
    overrides = ["trainer.devices=2", "trainer.accelerator=cpu", "trainer.max_steps=40",
                 "trainer.val_check_interval=20",
                 "model.params.hidden=[32, 32]", "model.params.eval_samples=200", "model.params.spectral_norm=true",
                 "tracking.log_model=false"]
    env = subprocess_env() | {"OMP_NUM_THREADS": "1"}
    result = subprocess.run([*trainyard_command(), "run", "-q", str(SPECS / "ring_wgan_gp.yaml"),
                             *[arg for o in overrides for arg in ("--set", o)]],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(tracking_uri())
    [recorded] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    metrics = recorded.data.metrics
    assert recorded.info.status == "FINISHED"
    assert metrics["train/replica_gap/generator"] == 0.0 and metrics["train/replica_gap/discriminator"] == 0.0
    assert math.isfinite(metrics["test/high_quality"])


# --- bad input -------------------------------------------------------------------------------

BAD = {
    "missing discriminator optimizer": (
        "ring_nonsaturating", ["optimizer={generator: {name: adam, lr: 0.001}}"],
        "optimizer.discriminator: missing: gan.mlp trains with generator, discriminator"),
    "n_critic 0": ("ring_wgan_gp", ["model.params.n_critic=0"], "model.params.n_critic"),
    "penalty without wgan_gp": (
        "ring_nonsaturating", ["model.params.gradient_penalty=10"],
        "model.params: gradient_penalty applies to the wgan_gp loss only; the non_saturating loss does not use it"),
    "conditional without labels": (
        "ring_nonsaturating", ["model.name=gan.conditional", "data.params.labels=false"],
        "model.params: a conditional GAN needs labelled data; gan.ring serves no labels (labels: false)"),
    "conditional with packing": (
        "ring_nonsaturating", ["model.name=gan.conditional", "model.params.pack=2"],
        "model.params: pack must be 1 for a conditional GAN: a pack would hold samples of different classes"),
}


def one_line_exit_2(command: str, spec: str, overrides: list[str]) -> str:
    settings = [arg for override in overrides for arg in ("--set", override)]
    result = CliRunner().invoke(app, [command, str(SPECS / f"{spec}.yaml"), *settings])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("case", BAD)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_bad_gan_input_is_one_line_and_exit_2_with_nothing_written(case, command):
    spec, overrides, expected = BAD[case]
    assert expected in one_line_exit_2(command, spec, overrides)
    assert not Path("mlflow.db").exists() and not Path("mlruns").exists()


@pytest.mark.slow
def test_an_fid_classifier_of_other_images_is_bad_input_and_starts_no_run(one_thread, tmp_path):
    write_mnist(tmp_path / "idx", n_train=60, n_test=20)
    other = run_experiment(load_experiment(EXPERIMENTS / "cnn" / "lenet5_mnist.yaml", [
        *QUIET, f"data.params.root={tmp_path / 'idx'}", "data.params.download=false", "trainer.max_epochs=1"]),
        quiet=True)
    line = one_line_exit_2("run", "dcgan_digits", [f"model.params.fid_classifier={other.run_id}"])
    assert f"model.params: fid_classifier: run {other.run_id} trained cnn.lenet5 on 1x28x28 inputs into 10 classes; " \
           "it must be an image classifier of 1x8x8 images into 10 classes" in line
    client = MlflowClient(tracking_uri())
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [found.info.run_id for found in runs] == [other.run_id]  # the refused run was never created


def test_an_fid_classifier_run_is_looked_up_in_the_store_the_gan_records_into(one_thread, tmp_path, monkeypatch):
    """The spec's tracking.uri, not $MLFLOW_TRACKING_URI's store: the core hands every component
    the store its run goes to (BuildContext.tracking_uri)."""
    store = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    classifier = lenet5_run(f"tracking.uri={store}", "trainer.max_epochs=1")
    # (mlflow.set_tracking_uri, called by the run, also sets the variable)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'default.db'}")
    named = f"model.params.fid_classifier={classifier.run_id}"
    built = build(load_experiment(SPECS / "dcgan_digits.yaml", [*QUIET, named, f"tracking.uri={store}"]))
    assert built.model.evaluation.classifier.source == f"run {classifier.run_id} (cnn.lenet5)"
    with pytest.raises(SpecError, match=f"fid_classifier: .*{classifier.run_id}"):  # not in the default store
        build(load_experiment(SPECS / "dcgan_digits.yaml", [*QUIET, named]))
