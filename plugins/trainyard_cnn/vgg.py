"""VGG-style networks (Simonyan & Zisserman, 2014): depth from small kernels.

Each stage stacks 3x3 convolutions with 'same' padding (the map keeps its size), then a 2x2
max pooling halves it. Two stacked 3x3 convolutions see a 5x5 window, three see 7x7, with
fewer weights and more non-linearities than one large kernel. Channels double at each stage
as the map shrinks. Depth is `stage_depths`: VGG-11 is (1, 1, 2, 2, 2), VGG-16 (2, 2, 3, 3, 3).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from torch import nn

from trainyard import Params
from trainyard_cnn.blocks import ConvBlock, FeatureShape, classifier_head, init_for_relu, pool_layer, spatial_dims


class VGGParams(Params):
    stage_depths: tuple[Annotated[int, Field(ge=1)], ...] = Field(
        (1, 1, 2), min_length=1, description="3x3 convolutions per stage; each stage ends with 2x2 max pooling.")
    base_width: int = Field(32, ge=1, description="Channels of the first stage, doubled at each later stage.")
    max_width: int = Field(512, ge=1, description="Upper bound on the channels of a stage.")
    hidden: tuple[int, ...] = Field((256,), description="Fully connected layers before the output.")
    dropout: float = Field(0.5, ge=0, le=1, description="Dropout after each hidden fully connected layer.")
    batch_norm: bool = Field(True, description="Batch normalisation after each convolution.")


class VGG(nn.Module):
    def __init__(self, params: VGGParams, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        dims = spatial_dims(input_shape)
        shape = FeatureShape(input_shape[0], input_shape[1:])
        layers: list[nn.Module] = []
        in_channels = input_shape[0]
        for stage, depth in enumerate(params.stage_depths):
            width = min(params.base_width * 2 ** stage, params.max_width)
            for _ in range(depth):
                layers.append(ConvBlock(dims, in_channels, width, 3, padding="same", batch_norm=params.batch_norm))
                in_channels = width
            layers.append(pool_layer(dims, "max", 2))  # (B, C, H, W) -> (B, C, H/2, W/2)
            shape = shape.conv(width, 3).pool(2).check(input_shape, f"pooling stage {stage + 1}")
        self.features = nn.Sequential(*layers)

        self.classifier = classifier_head(shape.numel, params.hidden, num_classes, "relu", params.dropout)
        init_for_relu(self)

    def forward(self, x):
        return self.classifier(self.features(x))  # (B, C, *spatial) -> (B, num_classes)
