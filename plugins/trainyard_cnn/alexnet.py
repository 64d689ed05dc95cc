"""AlexNet-style networks (Krizhevsky, Sutskever & Hinton, 2012).

What AlexNet showed, kept here as parameters:
- ReLU instead of tanh: non-saturating, so deep networks train several times faster;
- max pooling between some of its five convolution layers;
- dropout in the large fully connected layers, against overfitting;
- weight decay (an L2 penalty). It is an optimiser setting, so it lives in the spec:
  `optimizer: {name: sgd, lr: 0.01, momentum: 0.9, weight_decay: 0.0005}`.

The original takes 224x224 images with an 11x11 stride-4 first convolution and 4096-unit
dense layers. `stem_kernel`, `stem_stride` and `width` scale it down for small images.
(Local response normalisation, AlexNet's own, is replaced by the optional batch norm.)
"""

from __future__ import annotations

from pydantic import Field, model_validator
from torch import nn

from trainyard import Params
from trainyard_cnn.blocks import ConvBlock, FeatureShape, classifier_head, init_for_relu, pool_layer, spatial_dims


class AlexNetParams(Params):
    channels: tuple[int, ...] = Field((64, 192, 384, 256, 256), min_length=1,
                                      description="Output channels of each convolution, before scaling by width.")
    width: float = Field(0.25, gt=0, le=4, description="Multiplier on every channel count and hidden size.")
    stem_kernel: int = Field(3, ge=1, description="Kernel of the first convolution (11 in the original).")
    stem_stride: int = Field(1, ge=1, description="Stride of the first convolution (4 in the original).")
    kernel_size: int = Field(3, ge=1, description="Kernel of the other convolutions.")
    pool_after: tuple[int, ...] = Field((0, 1, 4), description="Indices of the convolutions followed by max pooling.")
    pool_kernel: int = Field(2, ge=1, description="Max-pooling window (3, with stride 2, in the original).")
    pool_stride: int | None = Field(None, ge=1, description="Max-pooling stride (default: the window).")
    hidden: tuple[int, ...] = Field((4096, 4096), description="Fully connected layers, before scaling by width.")
    dropout: float = Field(0.5, ge=0, le=1, description="Dropout after each hidden fully connected layer.")
    batch_norm: bool = Field(False, description="Batch normalisation after each convolution.")

    @model_validator(mode="after")
    def _pool_indices_exist(self) -> "AlexNetParams":
        bad = [i for i in self.pool_after if not 0 <= i < len(self.channels)]
        if bad:
            raise ValueError(f"pool_after {bad} names no convolution (there are {len(self.channels)}, from 0)")
        return self


class AlexNet(nn.Module):
    def __init__(self, params: AlexNetParams, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        dims = spatial_dims(input_shape)
        scaled = [max(1, round(c * params.width)) for c in params.channels]
        shape = FeatureShape(input_shape[0], input_shape[1:])
        layers: list[nn.Module] = []
        in_channels = input_shape[0]
        for index, out_channels in enumerate(scaled):
            kernel = params.stem_kernel if index == 0 else params.kernel_size
            stride = params.stem_stride if index == 0 else 1
            padding = kernel // 2  # 'same' for odd kernels at stride 1, and usable at any stride
            layers.append(ConvBlock(dims, in_channels, out_channels, kernel, stride, padding,
                                    batch_norm=params.batch_norm, activation="relu"))
            shape = shape.conv(out_channels, kernel, stride, padding).check(input_shape, f"convolution {index}")
            if index in params.pool_after:
                layers.append(pool_layer(dims, "max", params.pool_kernel, params.pool_stride))
                shape = shape.pool(params.pool_kernel, params.pool_stride).check(input_shape, f"pooling after {index}")
            in_channels = out_channels
        self.features = nn.Sequential(*layers)

        hidden = tuple(max(1, round(units * params.width)) for units in params.hidden)
        self.classifier = classifier_head(shape.numel, hidden, num_classes, "relu", params.dropout)
        init_for_relu(self)

    def forward(self, x):
        return self.classifier(self.features(x))  # (B, C, *spatial) -> (B, num_classes)
