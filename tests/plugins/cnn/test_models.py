"""Every CNN model, built through the registry, on 2-D images and 3-D volumes: output shapes,
finite values, gradients for every parameter, heads sized by the formula, v1 versus v2."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainyard import BuildContext
from trainyard.registry import get_registry
from trainyard_cnn.resnet import BasicBlock, PreActBasicBlock, ResNet, ResNetParams
from trainyard_cnn.vgg import VGG, VGGParams


class FakeData:
    def __init__(self, input_shape, classes=4):
        self.input_shape = input_shape
        self.class_names = tuple(str(i) for i in range(classes))


def cnn_models() -> list[str]:
    return [name for name in get_registry().names("model") if name.startswith("cnn.")]


SMALL = {  # small widths keep the whole grid fast
    "cnn.alexnet": {"width": 0.1},
    "cnn.vgg": {"base_width": 8, "stage_depths": [1, 1]},
    "cnn.resnet": {"base_width": 8, "stage_depths": [1, 1]},
    "cnn.lenet5": {},
}


def build(name: str, input_shape, **params):
    registered = get_registry().get("model", name)
    validated = registered.component.params.model_validate(SMALL[name] | params)
    return registered.component.build(validated, BuildContext(data=FakeData(input_shape)))


def test_the_registry_lists_every_cnn_model():
    assert cnn_models() == ["cnn.alexnet", "cnn.lenet5", "cnn.resnet", "cnn.vgg"]


@pytest.mark.parametrize("input_shape", [(1, 8, 8), (3, 32, 32), (1, 16, 16, 16)],
                         ids=["digits-2d", "rgb-2d", "volume-3d"])
@pytest.mark.parametrize("name", cnn_models())
def test_forward_and_backward(name, input_shape):
    torch.manual_seed(0)
    model = build(name, input_shape)
    x = torch.randn(3, *input_shape)
    logits = model(x)
    assert logits.shape == (3, 4)
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([0, 1, 3])).backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), param_name
    assert hasattr(model.net, "features") and hasattr(model.net, "classifier")


@pytest.mark.parametrize("name", ["cnn.lenet5", "cnn.alexnet", "cnn.vgg"])
@pytest.mark.parametrize("input_shape", [(1, 8, 8), (3, 32, 32), (1, 16, 16, 16)])
def test_head_is_sized_by_the_formula(name, input_shape):
    net = build(name, input_shape).net
    first_linear = next(m for m in net.classifier if isinstance(m, nn.Linear))
    features = net.features(torch.zeros(1, *input_shape))
    assert first_linear.in_features == features[0].numel()


@pytest.mark.parametrize("name", cnn_models())
@pytest.mark.parametrize("batch_norm", [True, False])
def test_batch_norm_switch(name, batch_norm):
    model = build(name, (1, 8, 8), batch_norm=batch_norm)
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert has_bn == batch_norm


def test_too_small_input_is_a_clear_error():
    with pytest.raises(ValueError) as error:
        VGG(VGGParams(stage_depths=(1, 1, 1, 1, 1)), (1, 8, 8), 10)
    assert str(error.value) == ("input 1x8x8 is too small: spatial size falls to 0x0 after pooling stage 4; "
                                "use padding 'same', smaller strides or fewer pooling stages")


def test_resnet_v1_activates_after_the_addition_and_v2_does_not():
    torch.manual_seed(0)
    x = torch.randn(8, 4, 6, 6)
    v1, v2 = BasicBlock(2, 4, 4, 1, True), PreActBasicBlock(2, 4, 4, 1, True)
    assert (v1(x) >= 0).all()  # ReLU on the sum
    assert (v2(x) < 0).any()  # nothing after the sum: the identity path carries x unchanged
    # With the residual branch zeroed, a v2 block is exactly the identity; a v1 block is ReLU(x).
    for block in (v1, v2):
        nn.init.zeros_(block.conv2.weight)
        if block.conv2.bias is not None:
            nn.init.zeros_(block.conv2.bias)
    v1.bn2.reset_parameters(), nn.init.zeros_(v1.bn2.weight)
    assert torch.equal(v2(x), x)
    assert torch.allclose(v1(x), torch.relu(x))


def test_resnet_versions_differ_in_structure():
    v1 = ResNet(ResNetParams(version="v1", stage_depths=(1, 1)), (1, 8, 8), 10)
    v2 = ResNet(ResNetParams(version="v2", stage_depths=(1, 1)), (1, 8, 8), 10)
    assert all(isinstance(b, BasicBlock) for b in v1.features if isinstance(b, (BasicBlock, PreActBasicBlock)))
    assert sum(isinstance(b, PreActBasicBlock) for b in v2.features) == 2
    # v2 ends with BN-ReLU before pooling; v1 does not need to
    assert isinstance(v2.features[-3], nn.BatchNorm2d) and isinstance(v2.features[-2], nn.ReLU)
    # the second stage halves the map and doubles the channels
    x = torch.zeros(1, 1, 8, 8)
    for net in (v1, v2):
        out = net.features[:-1](x)
        assert out.shape == (1, 32, 4, 4)
