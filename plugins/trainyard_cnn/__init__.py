"""Convolutional networks: trainyard's built-in `cnn` plugin.

Registered like any third-party plugin, through pyproject.toml:

    [project.entry-points."trainyard.plugins"]
    cnn = "trainyard_cnn"

Models (each trains as an ImageClassifier; all take 2-D images or 3-D volumes):
    cnn.lenet5    LeNet-5                        lenet.py
    cnn.alexnet   AlexNet-style                  alexnet.py
    cnn.vgg       VGG-style, depth configurable  vgg.py
    cnn.resnet    ResNet v1 / v2, basic blocks   resnet.py
Data:
    cnn.digits    scikit-learn's 8x8 digits (offline)
    cnn.mnist     MNIST / Fashion-MNIST IDX files
    cnn.cifar10   CIFAR-10 binary files
    cnn.volumes   synthetic 3-D shapes
Reports: a confusion matrix and misclassified test images (plots.py).
"""

from __future__ import annotations

from trainyard import BuildContext, datamodule, hookimpl, model
from trainyard_cnn import data, plots
from trainyard_cnn.examples import CIFAR10_DATA, DIGITS_DATA, MNIST_DATA, MODEL, VOLUMES_DATA
from trainyard_cnn.alexnet import AlexNet, AlexNetParams
from trainyard_cnn.classifier import METRICS, ImageClassifier, image_classifier
from trainyard_cnn.lenet import LeNet5, LeNet5Params
from trainyard_cnn.resnet import ResNet, ResNetParams
from trainyard_cnn.vgg import VGG, VGGParams

# --- models ----------------------------------------------------------------------------------


@model(LeNet5Params, metrics=METRICS, example=MODEL)
def lenet5(params: LeNet5Params, ctx: BuildContext) -> ImageClassifier:
    """LeNet-5 (LeCun et al. 1998): two convolution/subsampling stages, then dense layers."""
    return image_classifier(LeNet5, params, ctx)


@model(AlexNetParams, metrics=METRICS, example=MODEL)
def alexnet(params: AlexNetParams, ctx: BuildContext) -> ImageClassifier:
    """AlexNet-style (Krizhevsky et al. 2012): five ReLU convolutions, max pooling, dropout."""
    return image_classifier(AlexNet, params, ctx)


@model(VGGParams, metrics=METRICS, example=MODEL)
def vgg(params: VGGParams, ctx: BuildContext) -> ImageClassifier:
    """VGG-style (Simonyan & Zisserman 2014): stacks of 3x3 'same' convolutions before each pooling."""
    return image_classifier(VGG, params, ctx)


@model(ResNetParams, metrics=METRICS, example=MODEL)
def resnet(params: ResNetParams, ctx: BuildContext) -> ImageClassifier:
    """ResNet with basic blocks (He et al.): v1 post-activation, v2 pre-activation."""
    return image_classifier(ResNet, params, ctx)


# --- data ------------------------------------------------------------------------------------


@datamodule(data.DigitsParams, example=DIGITS_DATA)
def digits(params: data.DigitsParams, ctx: BuildContext) -> data.Digits:
    """scikit-learn's 1,797 8x8 handwritten digits: real data that needs no download."""
    return data.Digits(params)


@datamodule(data.MNISTParams, example=MNIST_DATA)
def mnist(params: data.MNISTParams, ctx: BuildContext) -> data.MNIST:
    """MNIST or Fashion-MNIST, read from the IDX files in a local folder (optional download)."""
    return data.MNIST(params)


@datamodule(data.CIFAR10Params, example=CIFAR10_DATA)
def cifar10(params: data.CIFAR10Params, ctx: BuildContext) -> data.CIFAR10:
    """CIFAR-10, read from the binary version's files in a local folder (optional download)."""
    return data.CIFAR10(params)


@datamodule(data.VolumesParams, example=VOLUMES_DATA)
def volumes(params: data.VolumesParams, ctx: BuildContext) -> data.Volumes:
    """Synthetic noisy 3-D volumes of spheres, cubes and cylinders, for 3-D convolutions."""
    return data.Volumes(params)


# --- hooks -----------------------------------------------------------------------------------


@hookimpl
def register_models():
    return [lenet5, alexnet, vgg, resnet]


@hookimpl
def register_datamodules():
    return [digits, mnist, cifar10, volumes]


@hookimpl
def make_run_reports(report):
    if isinstance(report.model, ImageClassifier):
        return plots.write_reports(report.model, report.directory)
    return None
