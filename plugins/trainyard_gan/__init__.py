"""Generative adversarial networks: trainyard's built-in `gan` plugin.

Registered like any third-party plugin, through pyproject.toml:

    [project.entry-points."trainyard.plugins"]
    gan = "trainyard_gan"

A GAN is an implicit generative model: a generator turns noise into samples, a discriminator
tells them from training samples, and each trains against the other (gan.py).

Models (each trains as a GAN, with two named optimizers, `generator` and `discriminator`):
    gan.mlp          MLP generator and discriminator: 2-D points, or flattened images  networks.py
    gan.dcgan        DCGAN's convolutional pair, for images of any size that halves
    gan.conditional  either of the two, conditioned on the class (projection discriminator)
Losses (losses.py): minimax, non_saturating, hinge, wgan_gp; spectral normalisation, n_critic,
an EMA of the generator and PacGAN's packing are options of every model.
Data: gan.ring, gan.grid, gan.spiral, 2-D mixtures with known modes (points.py); images come
from the CNN family's data modules, cnn.digits and cnn.mnist.
Measures (evaluation.py): VEEGAN's mode coverage on 2-D data (metrics.py), FID and class
coverage on images through a trainyard-trained classifier (features.py), mode collapse as a
metric and the run tag `gan.mode_collapse`. Reports: plots.py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trainyard import BuildContext, Example, Params, datamodule, hookimpl, model
from trainyard.tracking import tracking_uri
from trainyard_gan import features, networks, plots
from trainyard_gan.evaluation import ImageEvaluation, PointsEvaluation
from trainyard_gan.gan import GAN
from trainyard_gan.losses import Loss
from trainyard_gan.metrics import CollapseDetector
from trainyard_gan.points import GridParams, Points, RingParams, SpiralParams

OPTIMIZERS = {"generator": "generator", "discriminator": "discriminator"}
EVALUATED = ("modes_covered", "high_quality", "kl_modes", "mode_score", "fid", "class_coverage", "class_entropy",
             "min_class_share", "cond_acc", "d_acc_real", "d_acc_fake")
METRICS = (
    *(f"train/{name}" for name in ("d_loss", "g_loss", "d_acc_real", "d_acc_fake", "d_grad_norm", "g_grad_norm",
                                   "gradient_penalty", "r1_penalty", "replica_gap/generator",
                                   "replica_gap/discriminator")),
    "val/mode_collapse", *(f"{stage}/{name}" for stage in ("val", "test") for name in EVALUATED))


class GANOptions(Params):
    """What every GAN of this family takes besides its networks' shape."""

    loss: Loss = Field("non_saturating", description="minimax, non_saturating, hinge or wgan_gp (losses.py).")
    gradient_penalty: float | None = Field(None, gt=0, description="lambda of the gradient penalty, for the wgan_gp "
                                                                   "loss only (default 10).")
    r1: float = Field(0.0, ge=0, description="gamma of the R1 penalty (gamma / 2) E |grad D(x)|^2 on real samples "
                                             "(Mescheder et al. 2018), with any loss; 0: none.")
    n_critic: int = Field(1, ge=1, description="Discriminator steps per generator step: the generator steps on "
                                               "every n_critic-th training batch.")
    spectral_norm: bool = Field(False, description="Spectral normalisation of every discriminator layer.")
    pack: int = Field(1, ge=1, description="PacGAN: the discriminator judges this many samples at once, side by "
                                           "side, so that a generator short of variety is caught; 1: one at a time.")
    ema: float | None = Field(None, gt=0, lt=1, description="Decay of an exponential moving average of the "
                                                            "generator's weights (e.g. 0.999), which then makes every "
                                                            "sample that is measured or shown; null: none.")
    noise_dim: int = Field(16, ge=1, description="Size of the generator's Gaussian noise input z.")
    eval_samples: int = Field(2500, ge=100, description="Samples generated, from fixed noise, at each validation "
                                                        "and test (VEEGAN's 2,500).")
    sample_every: int = Field(1, ge=1, description="Validations between the sample pictures logged as a "
                                                   "step-indexed series.")
    collapse_drop: float = Field(0.25, gt=0, le=1, description="Mode collapse: coverage falls this fraction of "
                                                               "the modes (at least one) below its best so far.")
    fid_classifier: str | None = Field(None, description="Images: the MLflow run (id or runs:/ URI) of a trainyard "
                                                         "classifier of the same images, whose features FID uses; "
                                                         "null: a LeNet-5 trained once on the data and cached.")


class MLPParams(GANOptions):
    hidden: tuple[int, ...] = Field((128, 128, 128), min_length=1, description="Hidden layers of the generator; "
                                                                               "the discriminator has the same.")


class DCGANParams(GANOptions):
    noise_dim: int = Field(64, ge=1, description="Size of the generator's Gaussian noise input z.")
    eval_samples: int = Field(1000, ge=100, description="Samples generated, from fixed noise, at each validation "
                                                        "and test.")
    channels: int = Field(64, ge=1, description="Feature maps at full resolution, doubled at each stage inwards "
                                                "(the discriminator's first convolution, the generator's last "
                                                "before the output).")
    stages: int = Field(2, ge=1, description="Stride-2 stages: the image is halved (and doubled back) this many "
                                             "times; its size must divide by 2^stages.")


class ConditionalParams(MLPParams, DCGANParams):
    network: Literal["mlp", "dcgan"] = Field("mlp", description="The networks conditioned: gan.mlp's (hidden) or "
                                                                "gan.dcgan's (channels, stages).")
    noise_dim: int = Field(32, ge=1, description="Size of the generator's Gaussian noise input z.")
    eval_samples: int = Field(2500, ge=100, description="Samples generated, from fixed noise and every class "
                                                        "equally often, at each validation and test.")


def _gan(params: GANOptions, ctx: BuildContext, network: str, conditional: bool) -> GAN:
    """Check the data and the options, then build the pair of networks and the module."""
    if params.gradient_penalty is not None and params.loss != "wgan_gp":
        raise ValueError(f"gradient_penalty applies to the wgan_gp loss only; the {params.loss} loss does not use it")
    data = ctx.data
    if isinstance(data, Points):
        name = f"gan.{data.mixture.name}"
        if network == "dcgan":
            raise ValueError(f"gan.dcgan needs images (C, H, W); {name} gives 2-D points: use gan.mlp")
        if params.fid_classifier:
            raise ValueError(f"fid_classifier measures images; the points of {name} are measured against its modes")
        sample_shape, class_names, evaluation = (2,), data.class_names, PointsEvaluation(data.mixture)
    else:
        name = type(data).__name__
        sample_shape, class_names = getattr(data, "input_shape", None), getattr(data, "class_names", None)
        if not isinstance(sample_shape, tuple) or len(sample_shape) != 3 or not class_names:
            raise ValueError(f"a GAN needs 2-D points (gan.ring, gan.grid, gan.spiral) or labelled images "
                             f"(cnn.digits, cnn.mnist); {name} gives neither")
        classifier = None
        if params.fid_classifier:
            # The store this run is recorded in (a sweep's, in its trials); the kit has none.
            store = ctx.tracking_uri or tracking_uri()
            classifier = features.from_run(params.fid_classifier, sample_shape, len(class_names), store)
        evaluation = ImageEvaluation(data, tuple(class_names), classifier)
    if conditional and not class_names:
        raise ValueError(f"a conditional GAN needs labelled data; {name} serves no labels (labels: false)")
    if conditional and params.pack > 1:
        raise ValueError("pack must be 1 for a conditional GAN: a pack would hold samples of different classes")
    classes = len(class_names) if conditional else 0
    # The discriminator sees `pack` samples side by side: along the features or the channels.
    judged = (params.pack * sample_shape[0], *sample_shape[1:])
    if network == "mlp":
        generator = networks.mlp_generator(params.noise_dim, params.hidden, sample_shape, classes)
        discriminator = networks.mlp_discriminator(params.hidden, judged, classes)
    else:
        generator = networks.dcgan_generator(params.noise_dim, params.channels, params.stages, sample_shape, classes)
        discriminator = networks.dcgan_discriminator(params.channels, params.stages, judged, classes)
    if params.spectral_norm:
        networks.with_spectral_norm(discriminator)
    collapse = CollapseDetector(evaluation.modes, params.collapse_drop)
    return GAN(generator, discriminator, params, evaluation, collapse, sample_shape, classes, ctx.seed)


# --- models ----------------------------------------------------------------------------------

RING = {"name": "gan.ring", "params": {"samples": 256, "batch_size": 64}}
DIGITS = {"name": "cnn.digits", "params": {"batch_size": 16}}


@model(MLPParams, metrics=METRICS, optimizers=OPTIMIZERS,
       example=Example(params={"hidden": [32, 32], "eval_samples": 200}, data=RING, output_shape=(2, 2)))
def mlp(params: MLPParams, ctx: BuildContext) -> GAN:
    """A GAN with MLP generator and discriminator (Goodfellow et al. 2014), for 2-D points or flattened images."""
    return _gan(params, ctx, "mlp", conditional=False)


@model(DCGANParams, metrics=METRICS, optimizers=OPTIMIZERS,
       example=Example(params={"channels": 8, "noise_dim": 16, "eval_samples": 200}, data=DIGITS,
                       output_shape=(2, 1, 8, 8)))
def dcgan(params: DCGANParams, ctx: BuildContext) -> GAN:
    """DCGAN (Radford et al. 2016): strided convolutions down, transposed convolutions up, for any image size."""
    return _gan(params, ctx, "dcgan", conditional=False)


@model(ConditionalParams, metrics=METRICS, optimizers=OPTIMIZERS,
       example=Example(params={"hidden": [32, 32], "eval_samples": 200}, data=RING, output_shape=(2, 2)))
def conditional(params: ConditionalParams, ctx: BuildContext) -> GAN:
    """A class-conditional GAN (Mirza & Osindero 2014) with a projection discriminator (Miyato & Koyama 2018)."""
    return _gan(params, ctx, params.network, conditional=True)


# --- data ------------------------------------------------------------------------------------

POINTS_BATCH = (("float32", (None, 2)), ("int64", (None,)))
SMALL = {"samples": 128, "batch_size": 32}


@datamodule(RingParams, example=Example(params=SMALL, batch=POINTS_BATCH))
def ring(params: RingParams, ctx: BuildContext) -> Points:
    """A ring of Gaussians (8 on a circle of radius 2, std 0.02): the classic mode-collapse test."""
    return Points(params, ctx.seed)


@datamodule(GridParams, example=Example(params=SMALL, batch=POINTS_BATCH))
def grid(params: GridParams, ctx: BuildContext) -> Points:
    """A square grid of Gaussians (5x5, 2 apart, std 0.05), as in VEEGAN."""
    return Points(params, ctx.seed)


@datamodule(SpiralParams, example=Example(params=SMALL, batch=POINTS_BATCH))
def spiral(params: SpiralParams, ctx: BuildContext) -> Points:
    """Gaussians along an Archimedean spiral (12 over 1.5 turns, std 0.02)."""
    return Points(params, ctx.seed)


# --- hooks -----------------------------------------------------------------------------------


@hookimpl
def register_models():
    return [mlp, dcgan, conditional]


@hookimpl
def register_datamodules():
    return [ring, grid, spiral]


@hookimpl
def make_run_reports(report):
    if isinstance(report.model, GAN):
        return plots.write_reports(report.model, report.data, report.directory)
    return None
