"""Representation learning: trainyard's built-in `repr` plugin.

Registered like any third-party plugin, through pyproject.toml:

    [project.entry-points."trainyard.plugins"]
    repr = "trainyard_repr"

Models (images from the CNN family's data modules, cnn.digits or cnn.mnist; no copy of them):
    repr.autoencoder        MLP autoencoder; bottleneck, sparse, denoising   autoencoder.py
    repr.conv_autoencoder   the same with LeNet-5's convolution stages       autoencoder.py
    repr.vae                variational autoencoder, beta-VAE, KL warm-up    vae.py
    repr.classifier         an MLP classifier whose encoder is the autoencoder's
    repr.word2vec           skip-gram and CBOW with negative sampling       word2vec.py
Data:
    repr.words              a text corpus as word2vec's windows (subsampled) words.py
Every code model reports, in the same run, PCA with the same code size (`test/pca_mse`) and
linear probes on the frozen codes (baselines.py); reports are in plots.py. Encoders carry into
classifiers with `model.init_from: {source: <run>, layers: {...}}` (networks.py lists the names).
"""

from __future__ import annotations

from trainyard import BuildContext, Example, hookimpl, model
from trainyard_cnn.classifier import METRICS as CLASSIFIER_METRICS
from trainyard_cnn.classifier import ImageClassifier
from trainyard_repr import plots, word2vec
from trainyard_repr.autoencoder import METRICS, Autoencoder, AutoencoderOptions, check_code_size
from trainyard_repr.codes import CodeModel
from trainyard_repr.networks import (ClassifierParams, ConvDecoder, ConvEncoder, ConvParams, EncoderClassifier,
                                     MLPDecoder, MLPEncoder, MLPParams)
from trainyard_repr.vae import METRICS as VAE_METRICS
from trainyard_repr.vae import VAE, VAEParams

DIGITS = {"name": "cnn.digits", "params": {"batch_size": 8}}


class AutoencoderParams(MLPParams, AutoencoderOptions):
    pass


class ConvAutoencoderParams(ConvParams, AutoencoderOptions):
    pass


def _images(ctx: BuildContext) -> tuple[tuple[int, ...], tuple[str, ...]]:
    input_shape, class_names = getattr(ctx.data, "input_shape", None), getattr(ctx.data, "class_names", None)
    if not isinstance(input_shape, tuple) or len(input_shape) != 3 or not class_names:
        raise ValueError(f"this model needs 2-D images with labels (cnn.digits, cnn.mnist); "
                         f"{type(ctx.data).__name__} gives none")
    return input_shape, tuple(class_names)


@model(AutoencoderParams, metrics=METRICS, example=Example(data=DIGITS, output_shape=(2, 1, 8, 8)))
def autoencoder(params: AutoencoderParams, ctx: BuildContext) -> Autoencoder:
    """An MLP autoencoder: hidden layers down to a bottleneck code, and back (sparse, denoising as options)."""
    input_shape, class_names = _images(ctx)
    check_code_size(params, params.code, input_shape)
    encoder = MLPEncoder(params, input_shape, Autoencoder.code_activation(params))
    return Autoencoder(encoder, MLPDecoder(params, input_shape), params, input_shape, params.code, class_names, ctx.seed)


@model(ConvAutoencoderParams, metrics=METRICS, example=Example(data=DIGITS, output_shape=(2, 1, 8, 8)))
def conv_autoencoder(params: ConvAutoencoderParams, ctx: BuildContext) -> Autoencoder:
    """A convolutional autoencoder: LeNet-5's convolution stages to a bottleneck code, and back."""
    input_shape, class_names = _images(ctx)
    check_code_size(params, params.code, input_shape)
    encoder = ConvEncoder(params, input_shape, Autoencoder.code_activation(params))
    return Autoencoder(encoder, ConvDecoder(params, input_shape, encoder), params, input_shape, params.code,
                       class_names, ctx.seed)


@model(VAEParams, metrics=VAE_METRICS,
       example=Example(data=DIGITS, output_shape=((2, 1, 8, 8), (2, VAEParams().code), (2, VAEParams().code))))
def vae(params: VAEParams, ctx: BuildContext) -> VAE:
    """A variational autoencoder: Gaussian encoder, Bernoulli or Gaussian decoder, negative ELBO in nats."""
    input_shape, class_names = _images(ctx)
    return VAE(params, input_shape, class_names, ctx.seed)


@model(ClassifierParams, metrics=CLASSIFIER_METRICS, example=Example(data=DIGITS, output_shape=(1, 10)))
def classifier(params: ClassifierParams, ctx: BuildContext) -> ImageClassifier:
    """An MLP classifier built on repr.autoencoder's encoder, so that a pre-trained one can start it."""
    input_shape, class_names = _images(ctx)
    return ImageClassifier(EncoderClassifier(params, input_shape, len(class_names)), input_shape, class_names)


@hookimpl
def register_models():
    return [autoencoder, conv_autoencoder, vae, classifier, *word2vec.MODELS]


@hookimpl
def register_datamodules():
    return [*word2vec.DATAMODULES]


@hookimpl
def make_run_reports(report):
    if isinstance(report.model, CodeModel):
        return plots.write_reports(report.model, report.data, report.directory)
    if isinstance(report.model, ImageClassifier):
        from trainyard_cnn import plots as cnn_plots

        return cnn_plots.write_reports(report.model, report.directory)
    if isinstance(report.model, getattr(word2vec, "Word2Vec", ())):
        return word2vec.write_reports(report)
    return None
