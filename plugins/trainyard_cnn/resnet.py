"""Residual networks with basic blocks (He, Zhang, Ren & Sun, 2015 and 2016).

A residual block learns a correction F(x) added to its input: out = x + F(x). When a block
has nothing useful to add it can learn F = 0, so extra depth no longer hurts, and gradients
reach early layers through the identity path. F is two 3x3 convolutions ("basic block").

v1, post-activation (2015):  out = ReLU(x + BN(conv(ReLU(BN(conv(x))))))
    the ReLU after the addition sits on the identity path.
v2, pre-activation (2016):   out = x + conv(ReLU(BN(conv(ReLU(BN(x))))))
    normalisation and ReLU move before each convolution, and nothing follows the addition:
    the identity path is clean from input to output; the network ends with BN-ReLU.

Each stage after the first halves the map with a stride-2 first block and doubles the
channels; the shortcut then needs a 1x1 stride-2 "projection" convolution to match shapes.
A global average pool and one linear layer classify. `batch_norm: false` removes every BN.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from trainyard import Params
from trainyard_cnn.blocks import FeatureShape, conv_layer, norm_layer, spatial_dims


class ResNetParams(Params):
    version: Literal["v1", "v2"] = Field("v2", description="v1: post-activation blocks; v2: pre-activation blocks.")
    stage_depths: tuple[Annotated[int, Field(ge=1)], ...] = Field(
        (2, 2, 2), min_length=1, description="Basic blocks per stage; stages after the first halve the map.")
    base_width: int = Field(16, ge=1, description="Channels of the first stage, doubled at each later stage.")
    stem_kernel: int = Field(3, ge=1, description="Kernel of the first convolution (7, with pooling, on ImageNet).")
    batch_norm: bool = Field(True, description="Batch normalisation in every block.")


class BasicBlock(nn.Module):
    """v1: conv-BN-ReLU-conv-BN, add the shortcut, then ReLU."""

    def __init__(self, dims: int, in_channels: int, out_channels: int, stride: int, batch_norm: bool):
        super().__init__()
        bias = not batch_norm
        self.conv1 = conv_layer(dims, in_channels, out_channels, 3, stride, padding=1, bias=bias)
        self.bn1 = norm_layer(dims, out_channels, batch_norm)
        self.conv2 = conv_layer(dims, out_channels, out_channels, 3, 1, padding=1, bias=bias)
        self.bn2 = norm_layer(dims, out_channels, batch_norm)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(conv_layer(dims, in_channels, out_channels, 1, stride, padding=0, bias=bias),
                                          norm_layer(dims, out_channels, batch_norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))  # the non-linearity sits on the identity path


class PreActBasicBlock(nn.Module):
    """v2: BN-ReLU-conv-BN-ReLU-conv, plus the shortcut; nothing after the addition."""

    def __init__(self, dims: int, in_channels: int, out_channels: int, stride: int, batch_norm: bool):
        super().__init__()
        bias = not batch_norm
        self.bn1 = norm_layer(dims, in_channels, batch_norm)
        self.conv1 = conv_layer(dims, in_channels, out_channels, 3, stride, padding=1, bias=bias)
        self.bn2 = norm_layer(dims, out_channels, batch_norm)
        self.conv2 = conv_layer(dims, out_channels, out_channels, 3, 1, padding=1, bias=True)
        self.projection: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.projection = conv_layer(dims, in_channels, out_channels, 1, stride, padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        # A projection sees the pre-activated input (as in the paper); the identity sees x itself.
        shortcut = self.projection(pre) if self.projection is not None else x
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class ResNet(nn.Module):
    def __init__(self, params: ResNetParams, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        dims = spatial_dims(input_shape)
        v1 = params.version == "v1"
        width = params.base_width
        stem_padding = params.stem_kernel // 2
        stem: list[nn.Module] = [conv_layer(dims, input_shape[0], width, params.stem_kernel, 1, stem_padding,
                                            bias=not params.batch_norm)]
        if v1:  # v2 blocks normalise their own input
            stem += [norm_layer(dims, width, params.batch_norm), nn.ReLU()]
        shape = FeatureShape(input_shape[0], input_shape[1:]).conv(width, params.stem_kernel, 1, stem_padding)
        shape.check(input_shape, "the stem")

        block_class = BasicBlock if v1 else PreActBasicBlock
        blocks: list[nn.Module] = []
        in_channels = width
        for stage, depth in enumerate(params.stage_depths):
            out_channels = params.base_width * 2 ** stage
            for index in range(depth):
                stride = 2 if stage > 0 and index == 0 else 1  # (B, C, H, W) -> (B, 2C, H/2, W/2)
                blocks.append(block_class(dims, in_channels, out_channels, stride, params.batch_norm))
                shape = shape.conv(out_channels, 3, stride, 1).check(input_shape, f"stage {stage + 1}")
                in_channels = out_channels

        tail: list[nn.Module] = [] if v1 else [norm_layer(dims, in_channels, params.batch_norm), nn.ReLU()]
        pool = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool3d(1)  # (B, C, *spatial) -> (B, C, 1...)
        self.features = nn.Sequential(*stem, *blocks, *tail, pool)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(shape.channels, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))  # (B, C, *spatial) -> (B, num_classes)
