"""The output-size formula against the shapes torch produces, in 2-D and 3-D, for convolutions
and pooling; and the head sizing it drives."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from trainyard_cnn.blocks import ConvBlock, FeatureShape, conv_output_shape, conv_output_size

# torch refuses 'same' with stride > 1 (see test_same_padding_needs_stride_one), and kernels
# wider than the padded input: those combinations are left out of the grid.
CONV_GRID = [
    (size, kernel, stride, padding, dilation)
    for size, kernel, stride, padding, dilation in itertools.product([7, 8, 13], [1, 2, 3, 4], [1, 2, 3],
                                                                      [0, 1, 2, "valid", "same"], [1, 2])
    if not (padding == "same" and stride > 1)
    and (padding == "same" or size + 2 * (0 if padding == "valid" else padding) - dilation * (kernel - 1) >= 1)
]


@pytest.mark.parametrize("size,kernel,stride,padding,dilation", CONV_GRID)
@pytest.mark.parametrize("dims", [2, 3])
def test_convolution_output_size_matches_torch(dims, size, kernel, stride, padding, dilation):
    layer = (nn.Conv2d if dims == 2 else nn.Conv3d)(1, 1, kernel, stride=stride, padding=padding, dilation=dilation)
    out = layer(torch.zeros(1, 1, *([size] * dims)))
    assert out.shape[2:] == conv_output_shape((size,) * dims, kernel, stride, padding, dilation)


def test_same_padding_needs_stride_one():
    with pytest.raises(ValueError, match="'same' needs stride 1"):
        conv_output_size(8, 3, stride=2, padding="same")


# torch: pooling padding is at most half the window
POOL_GRID = [combo for combo in itertools.product([5, 8, 9], [2, 3], [1, 2, 3], [0, 1], [False, True])
             if combo[3] <= combo[1] // 2]


@pytest.mark.parametrize("size,kernel,stride,padding,ceil_mode", POOL_GRID)
@pytest.mark.parametrize("kind,dims", [("max", 2), ("avg", 2), ("max", 3), ("avg", 3)])
def test_pooling_output_size_matches_torch(kind, dims, size, kernel, stride, padding, ceil_mode):
    layer = {("max", 2): nn.MaxPool2d, ("avg", 2): nn.AvgPool2d, ("max", 3): nn.MaxPool3d,
             ("avg", 3): nn.AvgPool3d}[kind, dims](kernel, stride=stride, padding=padding, ceil_mode=ceil_mode)
    out = layer(torch.zeros(1, 1, *([size] * dims)))
    assert out.shape[2:] == conv_output_shape((size,) * dims, kernel, stride, padding, 1, ceil_mode)


@pytest.mark.parametrize("input_shape", [(3, 32, 32), (1, 14, 20, 12)])
def test_feature_shape_follows_a_real_stack(input_shape):
    dims = len(input_shape) - 1
    pool = nn.MaxPool2d if dims == 2 else nn.MaxPool3d
    stack = nn.Sequential(ConvBlock(dims, input_shape[0], 8, 5, padding="valid"), pool(2),
                          ConvBlock(dims, 8, 16, 3, stride=2, padding=1, dilation=1), pool(2, stride=1))
    shape = (FeatureShape(input_shape[0], input_shape[1:]).conv(8, 5, padding="valid").pool(2)
             .conv(16, 3, stride=2, padding=1).pool(2, stride=1))
    out = stack(torch.zeros(2, *input_shape))
    assert (out.shape[1], tuple(out.shape[2:])) == (shape.channels, shape.spatial)
    assert shape.numel == out[0].numel()


def test_feature_shape_reports_a_map_that_vanishes():
    shape = FeatureShape(1, (8, 8)).pool(2).pool(2).pool(2).pool(2)
    with pytest.raises(ValueError) as error:
        shape.check((1, 8, 8), "pooling stage 4")
    assert str(error.value) == ("input 1x8x8 is too small: spatial size falls to 0x0 after pooling stage 4; "
                                "use padding 'same', smaller strides or fewer pooling stages")


def test_conv_block_drops_the_bias_under_batch_norm():
    with_bn, without = ConvBlock(2, 3, 4, batch_norm=True), ConvBlock(2, 3, 4, batch_norm=False)
    assert with_bn[0].bias is None and isinstance(with_bn[1], nn.BatchNorm2d)
    assert without[0].bias is not None and isinstance(without[1], nn.Identity)
