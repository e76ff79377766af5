"""FrozenBatchNorm2d, the norm factory and the empty-batch conv/linear wrappers."""

import pytest
import torch
from torch import nn

from detection.layers import Conv2d, ConvTranspose2d, FrozenBatchNorm2d, Linear, get_norm


def test_frozen_bn_equals_batchnorm_in_eval():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(5)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 2)
    bn.bias.data.uniform_(-1, 1)
    bn.eval()
    frozen = FrozenBatchNorm2d(5)
    frozen.load_state_dict(bn.state_dict())  # num_batches_tracked is ignored
    x = torch.randn(2, 5, 4, 3)
    torch.testing.assert_close(frozen(x), bn(x))
    assert list(frozen.parameters()) == []


def test_get_norm():
    assert isinstance(get_norm("FrozenBN", 8), FrozenBatchNorm2d)
    assert isinstance(get_norm("BN", 8), nn.BatchNorm2d)
    gn = get_norm("GN", 64)
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 32
    with pytest.raises(ValueError, match="num_groups"):
        get_norm("GN", 48, num_groups=32)
    with pytest.raises(ValueError, match="norm must be one of"):
        get_norm("LN", 8)


def test_empty_batches_keep_shapes_and_graph():
    conv = Conv2d(3, 4, 3, stride=2, padding=1)
    deconv = ConvTranspose2d(4, 2, 2, stride=2)
    fc = Linear(6, 5)
    y = conv(torch.zeros(0, 3, 7, 9))
    # (7 + 2 - 3) // 2 + 1 = 4, (9 + 2 - 3) // 2 + 1 = 5
    assert y.shape == (0, 4, 4, 5)
    z = deconv(torch.zeros(0, 4, 5, 6))
    assert z.shape == (0, 2, 10, 12)
    f = fc(torch.zeros(0, 6))
    assert f.shape == (0, 5)
    (y.sum() + z.sum() + f.sum()).backward()
    for m in (conv, deconv, fc):
        assert m.weight.grad is not None and float(m.weight.grad.abs().sum()) == 0.0
