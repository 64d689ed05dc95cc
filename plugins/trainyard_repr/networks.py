"""The encoders and decoders every model of this family is made of.

An encoder maps images (B, C, H, W) to codes (B, code); a decoder maps codes back to pixel
logits (B, C, H, W). The classifier of this family reuses the MLP encoder unchanged, and the
convolutional encoder's `features` are LeNet-5's, so that pre-trained encoders carry into
classifiers by `model.init_from` (the layer names are listed in docs/repr.md):

    repr.autoencoder        encoder.layers.*      ->  repr.classifier   net.encoder.layers.*
    repr.conv_autoencoder   encoder.features.*    ->  cnn.lenet5        net.features.*
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field
from torch import nn

from trainyard import Params
from trainyard_cnn.blocks import ConvBlock, FeatureShape, activation_layer, pool_layer

class MLPParams(Params):
    hidden: tuple[int, ...] = Field((256, 128), description="Hidden layers of the encoder; the decoder mirrors them.")
    code: int = Field(8, ge=1, description="Size of the code: the bottleneck layer.")
    activation: Literal["relu", "tanh"] = Field("relu", description="Non-linearity of the hidden layers.")


class ConvParams(Params):
    channels: tuple[int, int] = Field((6, 16), description="Feature maps of the two convolution stages (as LeNet-5's).")
    kernel_size: int = Field(5, ge=1, description="Convolution kernel size (padding 'same').")
    activation: Literal["relu", "tanh"] = Field("tanh", description="Non-linearity after every convolution.")
    code: int = Field(8, ge=1, description="Size of the code: the bottleneck layer.")


class ClassifierParams(MLPParams):
    dropout: float = Field(0.0, ge=0, le=1, description="Dropout on the code, before the output layer.")


class MLPEncoder(nn.Module):
    """(B, C, H, W) -> (B, code): hidden layers, then a linear layer to the code and its activation."""

    def __init__(self, params: MLPParams, input_shape: tuple[int, ...], code_activation: str | None = None):
        super().__init__()
        sizes = (math.prod(input_shape), *params.hidden)
        layers: list[nn.Module] = [nn.Flatten()]
        for inputs, outputs in zip(sizes, sizes[1:]):
            layers += [nn.Linear(inputs, outputs), activation_layer(params.activation)]
        layers.append(nn.Linear(sizes[-1], params.code))
        if code_activation:
            layers.append(activation_layer(code_activation))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)  # (B, C, H, W) -> (B, code)


class MLPDecoder(nn.Module):
    """(B, code) -> pixel logits (B, C, H, W), through the encoder's hidden layers in reverse."""

    def __init__(self, params: MLPParams, input_shape: tuple[int, ...], code: int | None = None):
        super().__init__()
        sizes = (code or params.code, *reversed(params.hidden))
        layers: list[nn.Module] = []
        for inputs, outputs in zip(sizes, sizes[1:]):
            layers += [nn.Linear(inputs, outputs), activation_layer(params.activation)]
        layers += [nn.Linear(sizes[-1], math.prod(input_shape)), nn.Unflatten(1, input_shape)]
        self.layers = nn.Sequential(*layers)

    def forward(self, z):
        return self.layers(z)  # (B, code) -> (B, C, H, W)


class ConvEncoder(nn.Module):
    """LeNet-5's two convolution + max-pooling stages, then a linear layer to the code."""

    def __init__(self, params: ConvParams, input_shape: tuple[int, ...], code_activation: str | None = None):
        super().__init__()
        c1, c2 = params.channels
        block = dict(kernel_size=params.kernel_size, padding="same", batch_norm=False, activation=params.activation)
        self.features = nn.Sequential(ConvBlock(2, input_shape[0], c1, **block), pool_layer(2, "max", 2),
                                      ConvBlock(2, c1, c2, **block), pool_layer(2, "max", 2))
        shape = FeatureShape(input_shape[0], input_shape[1:]).conv(c1, params.kernel_size, padding="same")
        self.pooled_sizes = [shape.pool(2).spatial]  # (H/2, W/2), then (H/4, W/4): the decoder upsamples back
        shape = shape.pool(2).conv(c2, params.kernel_size, padding="same").pool(2).check(input_shape, "the encoder")
        self.pooled_sizes.append(shape.spatial)
        self.feature_shape = (c2, *shape.spatial)
        head: list[nn.Module] = [nn.Flatten(), nn.Linear(shape.numel, params.code)]
        if code_activation:
            head.append(activation_layer(code_activation))
        self.code = nn.Sequential(*head)

    def forward(self, x):
        return self.code(self.features(x))  # (B, C, H, W) -> (B, c2, H/4, W/4) -> (B, code)


class ConvDecoder(nn.Module):
    """(B, code) -> pixel logits (B, C, H, W): the encoder in reverse, with nearest-neighbour
    upsampling to the encoder's exact sizes (so that odd sizes, 7x7 from 28x28, come back)."""

    def __init__(self, params: ConvParams, input_shape: tuple[int, ...], encoder: ConvEncoder):
        super().__init__()
        c1, c2 = params.channels
        k = params.kernel_size
        self.expand = nn.Sequential(nn.Linear(params.code, math.prod(encoder.feature_shape)), activation_layer(params.activation),
                                    nn.Unflatten(1, encoder.feature_shape))
        self.layers = nn.Sequential(
            nn.Upsample(size=tuple(encoder.pooled_sizes[0])), nn.Conv2d(c2, c1, k, padding="same"), activation_layer(params.activation),
            nn.Upsample(size=tuple(input_shape[1:])), nn.Conv2d(c1, input_shape[0], k, padding="same"))

    def forward(self, z):
        return self.layers(self.expand(z))  # (B, code) -> (B, c2, H/4, W/4) -> (B, C, H, W)


class EncoderClassifier(nn.Module):
    """The MLP encoder of repr.autoencoder, then a linear layer to the classes: (B, C, H, W) -> (B, classes)."""

    def __init__(self, params: ClassifierParams, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        self.encoder = MLPEncoder(params, input_shape)
        self.head = nn.Sequential(nn.Dropout(params.dropout), nn.Linear(params.code, num_classes))

    def forward(self, x):
        return self.head(self.encoder(x))  # (B, C, H, W) -> (B, code) -> (B, classes)
