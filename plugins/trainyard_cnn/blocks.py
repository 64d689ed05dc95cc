"""Building blocks of convolutional networks, for 2-D images and 3-D volumes alike.

A convolution slides a small kernel over the input. Four settings decide the output size:
the kernel size k, the stride s (how far the kernel moves), the padding p (zeros added on each
side) and the dilation d (gaps between kernel taps: the kernel covers d*(k-1)+1 inputs).
Along each spatial dimension of size n:

    out = floor((n + 2p - d*(k-1) - 1) / s) + 1

'valid' padding means p = 0 (the kernel stays inside the input; the map shrinks by d*(k-1)).
'same' padding keeps out = n at stride 1 (p = d*(k-1)/2, split unevenly if that is odd).
Pooling (max or average over a window) follows the same formula with d = 1, usually with the
stride equal to the window, which halves a map for a 2x2 window.

The models of this package size their classifier heads with `FeatureShape`, which applies
this one formula layer by layer, so a configuration that shrinks a map to nothing is reported
before any tensor is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import NonNegativeInt
from torch import nn

Padding = Literal["valid", "same"] | NonNegativeInt  # an int: that many zeros on every side


def conv_output_size(size: int, kernel_size: int, stride: int = 1, padding: Padding = 0,
                     dilation: int = 1, ceil_mode: bool = False) -> int:
    """Output length of a convolution or pooling along one dimension:
    floor((n + 2p - d(k-1) - 1) / s) + 1, or ceil with ceil_mode (pooling).
    """
    if padding == "same":
        if stride != 1:
            raise ValueError("padding 'same' needs stride 1")
        return size
    pad = 0 if padding == "valid" else int(padding)
    span = size + 2 * pad - dilation * (kernel_size - 1) - 1
    if not ceil_mode:
        return span // stride + 1
    out = math.ceil(span / stride) + 1
    # PyTorch's rule: the last window must start inside the input or the left padding.
    if (out - 1) * stride >= size + pad:
        out -= 1
    return out


def conv_output_shape(spatial: tuple[int, ...], kernel_size: int, stride: int = 1, padding: Padding = 0,
                      dilation: int = 1, ceil_mode: bool = False) -> tuple[int, ...]:
    """`conv_output_size` along every spatial dimension."""
    return tuple(conv_output_size(n, kernel_size, stride, padding, dilation, ceil_mode) for n in spatial)


@dataclass(frozen=True)
class FeatureShape:
    """The (channels, *spatial) shape of a feature map, followed through layers by the formula."""

    channels: int
    spatial: tuple[int, ...]

    def conv(self, out_channels: int, kernel_size: int, stride: int = 1, padding: Padding = "same",
             dilation: int = 1) -> FeatureShape:
        return FeatureShape(out_channels, conv_output_shape(self.spatial, kernel_size, stride, padding, dilation))

    def pool(self, kernel_size: int = 2, stride: int | None = None) -> FeatureShape:
        return FeatureShape(self.channels, conv_output_shape(self.spatial, kernel_size, stride or kernel_size))

    @property
    def numel(self) -> int:
        return self.channels * math.prod(self.spatial)

    def check(self, input_shape: tuple[int, ...], where: str) -> FeatureShape:
        """Raise a one-line ValueError when a spatial size has fallen below 1."""
        if min(self.spatial) < 1:
            size = "x".join(map(str, input_shape))
            now = "x".join(str(max(n, 0)) for n in self.spatial)
            raise ValueError(f"input {size} is too small: spatial size falls to {now} after {where}; "
                             "use padding 'same', smaller strides or fewer pooling stages")
        return self


def conv_layer(dims: int, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
         padding: Padding = "same", dilation: int = 1, bias: bool = True) -> nn.Module:
    """nn.Conv2d or nn.Conv3d. (torch accepts 'same' and 'valid' itself, for stride 1.)"""
    layer = {2: nn.Conv2d, 3: nn.Conv3d}[dims]
    return layer(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=bias)


def pool_layer(dims: int, kind: Literal["max", "avg"], kernel_size: int = 2, stride: int | None = None) -> nn.Module:
    layers = {("max", 2): nn.MaxPool2d, ("max", 3): nn.MaxPool3d, ("avg", 2): nn.AvgPool2d, ("avg", 3): nn.AvgPool3d}
    return layers[kind, dims](kernel_size, stride=stride or kernel_size)


def norm_layer(dims: int, channels: int, enabled: bool) -> nn.Module:
    """Batch normalisation (normalise each channel over the batch, then scale and shift), or nothing."""
    if not enabled:
        return nn.Identity()
    return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims](channels)


def activation_layer(name: Literal["relu", "tanh", "sigmoid", "gelu"]) -> nn.Module:
    return {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}[name]()


class ConvBlock(nn.Sequential):
    """convolution -> (batch norm) -> activation. With batch norm the convolution has no bias:
    the normalisation would subtract it again, and its own shift takes the bias's place."""

    def __init__(self, dims: int, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: Padding = "same", dilation: int = 1, batch_norm: bool = False,
                 activation: Literal["relu", "tanh", "sigmoid", "gelu"] = "relu"):
        super().__init__(
            conv_layer(dims, in_channels, out_channels, kernel_size, stride, padding, dilation, bias=not batch_norm),
            norm_layer(dims, out_channels, batch_norm),
            activation_layer(activation),
        )


def classifier_head(in_features: int, hidden: tuple[int, ...], num_classes: int,
                    activation: Literal["relu", "tanh", "sigmoid", "gelu"] = "relu", dropout: float = 0.0) -> nn.Sequential:
    """Flatten, then fully connected layers (each followed by the activation and dropout), then
    the output layer: (B, C, *spatial) -> (B, num_classes). `in_features` comes from FeatureShape."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for units in hidden:
        layers += [nn.Linear(width, units), activation_layer(activation), nn.Dropout(dropout)]
        width = units
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def init_for_relu(module: nn.Module) -> None:
    """He (Kaiming) initialisation for a ReLU network: weights with variance 2/fan_in keep the
    signal's scale from layer to layer. PyTorch's default shrinks it a little at each layer,
    enough that a deep ReLU stack without batch norm starts out predicting the same thing for
    every input and barely learns."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Conv3d, nn.Linear)):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def spatial_dims(input_shape: tuple[int, ...]) -> int:
    """2 for (C, H, W) images, 3 for (C, D, H, W) volumes."""
    dims = len(input_shape) - 1
    if dims not in (2, 3):
        raise ValueError(f"expected input of shape (C, H, W) or (C, D, H, W), got {input_shape}")
    return dims
