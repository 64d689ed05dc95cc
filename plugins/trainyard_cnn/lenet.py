"""LeNet-5 (LeCun, Bottou, Bengio & Haffner, 1998): the network that made convolutions work.

Two convolution + subsampling stages learn local features, then fully connected layers
classify them:

    input (1, 32, 32)
    C1  6 feature maps, 5x5 convolutions        -> (6, 28, 28)
    S2  2x2 average pooling ("subsampling")      -> (6, 14, 14)
    C3  16 feature maps, 5x5 convolutions       -> (16, 10, 10)
    S4  2x2 average pooling                      -> (16, 5, 5)
    C5  120 units, F6 84 units, output 10

Those sizes are for 'valid' padding on 32x32 inputs. The 8x8 digits need padding 'same',
otherwise C3 would have nothing left to convolve; the classifier is sized for either by the
output-size formula in blocks.py. Tanh and average pooling are the paper's choices; ReLU and
max pooling are the modern ones.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from trainyard import Params
from trainyard_cnn.blocks import ConvBlock, FeatureShape, Padding, classifier_head, pool_layer, spatial_dims


class LeNet5Params(Params):
    channels: tuple[int, int] = Field((6, 16), description="Feature maps of the two convolution layers (C1, C3).")
    kernel_size: int = Field(5, ge=1, description="Convolution kernel size.")
    padding: Padding = Field("same", description="'same', 'valid' or zeros per side ('valid' on the 32x32 original).")
    activation: Literal["tanh", "relu"] = Field("tanh", description="Non-linearity after every layer.")
    pool: Literal["avg", "max"] = Field("avg", description="Subsampling: average (as in the paper) or max pooling.")
    hidden: tuple[int, ...] = Field((120, 84), description="Fully connected layers before the output (C5, F6).")
    dropout: float = Field(0.0, ge=0, le=1, description="Dropout after each hidden fully connected layer.")
    batch_norm: bool = Field(False, description="Batch normalisation after each convolution.")


class LeNet5(nn.Module):
    def __init__(self, params: LeNet5Params, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        dims = spatial_dims(input_shape)
        c1, c3 = params.channels
        k, pad = params.kernel_size, params.padding
        block = dict(kernel_size=k, padding=pad, batch_norm=params.batch_norm, activation=params.activation)
        self.features = nn.Sequential(
            ConvBlock(dims, input_shape[0], c1, **block),  # C1
            pool_layer(dims, params.pool, 2),  # S2
            ConvBlock(dims, c1, c3, **block),  # C3
            pool_layer(dims, params.pool, 2),  # S4
        )
        shape = FeatureShape(input_shape[0], input_shape[1:])
        shape = shape.conv(c1, k, padding=pad).check(input_shape, "C1").pool(2).check(input_shape, "S2")
        shape = shape.conv(c3, k, padding=pad).check(input_shape, "C3").pool(2).check(input_shape, "S4")

        # C5 and F6, then the output: (B, C3, *spatial) -> (B, num_classes)
        self.classifier = classifier_head(shape.numel, params.hidden, num_classes, params.activation, params.dropout)

    def forward(self, x):
        return self.classifier(self.features(x))  # (B, C, *spatial) -> (B, num_classes)
