"""Scaled-MNIST models: shapes, where the deformable layers are, init equivalence, param groups."""

import pytest
import torch
from torch import nn

from detection._ext import HAS_OPS
from detection.experiments.scaled_mnist.models import (
    ARCHS,
    DEFAULT_MIN_DEFORM_LAYER,
    build_model,
    deformable_layers,
    parameter_groups,
)
import detection.layers as L

needs_dcn = pytest.mark.skipif(
    not (HAS_OPS and hasattr(L, "DeformConv2d")),
    reason="needs detection.layers.DeformConv2d and the compiled ops (pip install --no-build-isolation -e .)",
)
N_CONVS = {"ScaledMNISTNet": 4, "MNISTClassifier": 5}


@pytest.mark.parametrize("arch", ARCHS)
def test_regular_shapes(arch):
    model = build_model(arch, deform=False)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert model.forward_features(torch.randn(2, 1, 28, 28)).shape[-2:] == (7, 7)
    assert len(model.convs()) == N_CONVS[arch]
    assert deformable_layers(model) == []
    assert all(type(c) is nn.Conv2d for c in model.convs())
    if arch == "MNISTClassifier":
        assert all(c.out_channels == 16 and c.kernel_size == (3, 3) for c in model.convs())
    with pytest.raises(ValueError, match="input"):
        model(torch.randn(2, 3, 28, 28))


def test_bad_arguments():
    with pytest.raises(ValueError, match="arch"):
        build_model("ResNet", deform=False)
    with pytest.raises(ValueError, match="min_deform_layer"):
        build_model("ScaledMNISTNet", deform=True, min_deform_layer=0)


@needs_dcn
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("modulation", [True, False])
@pytest.mark.parametrize("min_layer", [None, 2])
def test_deformable_shapes_and_placement(arch, modulation, min_layer):
    model = build_model(arch, deform=True, modulation=modulation, min_deform_layer=min_layer)
    first = min_layer or DEFAULT_MIN_DEFORM_LAYER[arch]
    convs = model.convs()
    assert len(convs) == N_CONVS[arch]
    for i, conv in enumerate(convs, start=1):
        assert isinstance(conv, L.DeformConv2d) == (i >= first), i
        if i >= first:
            k = 9
            assert conv.conv_offset.out_channels == (3 * k if modulation else 2 * k)
            for p in conv.conv_offset.parameters():  # zero-initialised predictor
                assert torch.count_nonzero(p) == 0
    assert len(deformable_layers(model)) == N_CONVS[arch] - first + 1
    out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(
        p.grad is not None for _, m in deformable_layers(model) for p in m.conv_offset.parameters()
    )


@needs_dcn
@pytest.mark.parametrize("arch", ARCHS)
def test_deformable_equals_regular_at_init(arch):
    # Zero offsets (and mask 0.5 for DCNv2) make a deformable conv a (scaled) regular conv. With the
    # regular twin's weights copied in, DCNv1 reproduces the regular net exactly.
    regular = build_model(arch, deform=False).eval()
    deform = build_model(arch, deform=True, modulation=False).eval()
    state = {k: v for k, v in deform.state_dict().items()}
    for k, v in regular.state_dict().items():
        assert k in state, k
        state[k] = v
    deform.load_state_dict(state)
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(deform(x), regular(x), rtol=1e-4, atol=1e-4)


def test_parameter_groups_give_offsets_a_tenth():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.conv_offset = nn.Conv2d(1, 27, 3)

    model = Tiny()
    groups = parameter_groups(model, lr=1e-3, offset_lr_factor=0.1)
    assert [g["name"] for g in groups] == ["main", "conv_offset"]
    assert groups[1]["lr"] == pytest.approx(1e-4) and groups[0]["lr"] == 1e-3
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.conv_offset.parameters()}
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.conv.parameters()}
    assert len(parameter_groups(nn.Linear(2, 2), 1e-3, 0.1)) == 1
