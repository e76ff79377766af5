"""ResNet-C5 backbone: torchvision weight mapping, parameter count, DCN placement, freezing."""

import pytest
import torch
from torch import nn
import torchvision

from detection.config import cfg as _cfg
from detection.config import load_config
from detection.modeling.backbone import (
    ResNet,
    build_backbone,
    load_torchvision_resnet,
    torchvision_to_ours,
)

from .conftest import needs_ops


def _tv_resnet50():
    torch.manual_seed(0)
    tv = torchvision.models.resnet50(weights=None)
    for m in tv.modules():  # non-trivial statistics so the norm mapping matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.0)
            m.bias.data.uniform_(-0.1, 0.1)
    return tv.eval()


def test_name_mapping():
    assert torchvision_to_ours("conv1.weight") == "stem.conv1.weight"
    assert torchvision_to_ours("bn1.running_var") == "stem.norm1.running_var"
    assert torchvision_to_ours("layer1.0.bn3.bias") == "res2.0.norm3.bias"
    assert torchvision_to_ours("layer4.2.conv2.weight") == "res5.2.conv2.weight"
    assert torchvision_to_ours("layer3.0.downsample.1.weight") == "res4.0.downsample.1.weight"
    assert torchvision_to_ours("fc.weight") == ""
    with pytest.raises(KeyError):
        torchvision_to_ours("head.weight")


def test_torchvision_weights_reproduce_torchvision_features():
    tv = _tv_resnet50()
    ours = ResNet(depth=50, norm="FrozenBN", res5_dilation=1).eval()
    missing, skipped = load_torchvision_resnet(ours, tv.state_dict())
    assert missing == []
    assert set(skipped) == {"fc.weight", "fc.bias"} | {
        k for k in tv.state_dict() if k.endswith("num_batches_tracked")
    }
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        c4 = tv.layer3(tv.layer2(tv.layer1(y)))
        c5 = tv.layer4(c4)
        out = ours(x)
    torch.testing.assert_close(out["C4"], c4, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out["C5"], c5, rtol=1e-4, atol=1e-4)


def test_gn_loading_keeps_conv_weights_and_skips_running_stats():
    tv = _tv_resnet50()
    ours = ResNet(depth=50, norm="GN")
    missing, skipped = load_torchvision_resnet(ours, tv.state_dict())
    assert missing == []  # GN has weight/bias, taken from BN's affine parameters
    assert any(k.endswith("running_mean") for k in skipped)
    torch.testing.assert_close(ours.res3[1].conv2.weight, tv.layer2[1].conv2.weight)


def test_parameter_count_equals_torchvision_without_dcn():
    tv = torchvision.models.resnet50(weights=None)
    tv_count = sum(p.numel() for n, p in tv.named_parameters() if not n.startswith("fc."))
    ours = ResNet(depth=50, norm="BN")
    assert sum(p.numel() for p in ours.parameters()) == tv_count
    tv18 = torchvision.models.resnet18(weights=None)
    tv18_count = sum(p.numel() for n, p in tv18.named_parameters() if not n.startswith("fc."))
    r18 = ResNet(depth=18, norm="GN", res2_out_channels=64)
    assert sum(p.numel() for p in r18.parameters()) == tv18_count


def test_dilated_res5_keeps_stride_16_and_freezing():
    net = ResNet(depth=18, norm="BN", stem_out_channels=8, res2_out_channels=8, freeze_at=2)
    out = net(torch.randn(1, 3, 64, 80))
    assert out["C4"].shape == (1, 32, 4, 5) and out["C5"].shape == (1, 64, 4, 5)
    assert net.c5_stride == 16 and net.c4_channels == 32 and net.c5_channels == 64
    frozen = {n.split(".")[0] for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {"stem", "res2"}
    net1 = ResNet(depth=18, norm="BN", stem_out_channels=8, res2_out_channels=8, res5_dilation=1)
    assert net1(torch.randn(1, 3, 64, 80))["C5"].shape == (1, 64, 2, 3)


def _cfg_with(**kv):
    cfg = _cfg.clone()
    cfg.merge_from_list([x for k, v in kv.items() for x in (k.replace("__", "."), v)])
    return cfg


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"MODEL__RESNETS__STAGE_WITH_DCN": (False, True, True, True, True)}, "STAGE_WITH_DCN"),
        ({"MODEL__BACKBONE__CONV_BODY": "R-152-C5"}, "CONV_BODY"),
        ({"MODEL__RESNETS__NORM": "LN"}, "MODEL.RESNETS.NORM"),
        ({"MODEL__RESNETS__RES5_DILATION": 4}, "RES5_DILATION"),
        ({"MODEL__BACKBONE__FREEZE_CONV_BODY_AT": 6}, "FREEZE_CONV_BODY_AT"),
        ({"MODEL__GROUP_NORM__NUM_GROUPS": 48}, "MODEL.GROUP_NORM.NUM_GROUPS"),
        ({"MODEL__RESNETS__DEFORMABLE_GROUPS": 3}, "MODEL.RESNETS.DEFORMABLE_GROUPS=3"),
        (
            {"MODEL__BACKBONE__CONV_BODY": "R-18-C5", "MODEL__RESNETS__DEFORMABLE_GROUPS": 24},
            "MODEL.RESNETS.DEFORMABLE_GROUPS=24",
        ),
        ({"MODEL__BACKBONE__CONV_BODY": "R-18-C5", "MODEL__RESNETS__NUM_GROUPS": 2}, "NUM_GROUPS"),
    ],
)
def test_backbone_config_errors_name_the_key(overrides, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        build_backbone(_cfg_with(**overrides))


def _dcn_predictor_params(depth_blocks, widths, dg=1):
    # one conv_offset per 3x3 conv: 3 * dg * 9 output channels, 3x3 kernel over `width` inputs,
    # with bias
    return sum(n * (27 * dg * w * 9 + 27 * dg) for n, w in zip(depth_blocks, widths))


@needs_ops
def test_paper_backbone_dcn_placement_gn_and_parameter_count():
    cfg = load_config("configs/e2e_deformconv_mask_rcnn_R_50_C5_1x.yaml", world_size=1)
    cfg.defrost()
    cfg.MODEL.RESNETS.NORM = "GN"
    import detection.layers as L

    net = build_backbone(cfg)
    for stage, dcn in zip(["res2", "res3", "res4", "res5"], cfg.MODEL.RESNETS.STAGE_WITH_DCN):
        for block in getattr(net, stage):
            assert isinstance(block.conv2, L.ModulatedDeformConv2dPack) == dcn, stage
            assert isinstance(block.conv1, nn.Conv2d) and isinstance(block.conv3, nn.Conv2d)
    norms = [
        m
        for n, m in net.named_modules()
        if n.endswith(("norm1", "norm2", "norm3")) or n.endswith("downsample.1")
    ]
    assert norms and all(isinstance(m, nn.GroupNorm) and m.num_groups == 32 for m in norms)
    for n, p in net.named_parameters():
        if "conv_offset" in n:
            assert float(p.detach().abs().sum()) == 0.0, n  # zero-initialised predictors
    tv = torchvision.models.resnet50(weights=None)
    tv_count = sum(p.numel() for n, p in tv.named_parameters() if not n.startswith("fc."))
    extra = _dcn_predictor_params((4, 6, 3), (128, 256, 512))
    assert sum(p.numel() for p in net.parameters()) == tv_count + extra
    offset_count = sum(p.numel() for n, p in net.named_parameters() if "conv_offset" in n)
    assert offset_count == extra


@needs_ops
def test_dcnv1_backbone_uses_unmodulated_deform_conv():
    cfg = load_config("configs/e2e_dcnv1_mask_rcnn_R_50_C5_1x.yaml", world_size=1)
    cfg.defrost()
    cfg.merge_from_list(
        ["MODEL.BACKBONE.CONV_BODY", "R-18-C5", "MODEL.RESNETS.RES2_OUT_CHANNELS", 64]
    )
    import detection.layers as L

    net = build_backbone(cfg)
    assert isinstance(net.res3[0].conv1, L.DeformConv2d)
    # forward through the unmodulated deformable stages
    x = torch.randn(1, 3, 48, 48)
    out = net(x)
    assert out["C5"].shape == (1, 512, 3, 3)


@needs_ops
def test_deformable_groups_size_the_offset_predictors():
    net = ResNet(
        depth=18,
        norm="GN",
        gn_num_groups=4,
        stem_out_channels=8,
        res2_out_channels=8,
        stage_with_dcn=(True, False, False, True),
        deformable_groups=2,
    )
    preds = {n: m for n, m in net.named_modules() if n.endswith("conv_offset")}
    # both 3x3 convs of every BasicBlock of res2 and res5 (2 blocks each)
    assert sorted(preds) == sorted(
        f"{s}.{b}.conv{i}.conv_offset" for s in ("res2", "res5") for b in (0, 1) for i in (1, 2)
    )
    assert all(m.out_channels == 3 * 2 * 9 for m in preds.values())
    out = net(torch.randn(1, 3, 32, 32))
    assert out["C5"].shape == (1, 64, 2, 2)


@needs_ops
def test_torchvision_weights_load_into_the_deformable_backbone():
    tv = _tv_resnet50()
    cfg = load_config("configs/e2e_deformconv_mask_rcnn_R_50_C5_1x.yaml", world_size=1)
    cfg.defrost()
    net = build_backbone(cfg)
    missing, _ = load_torchvision_resnet(net, tv.state_dict())
    assert missing and all(".conv_offset." in k for k in missing)
    torch.testing.assert_close(net.res4[2].conv2.weight, tv.layer3[2].conv2.weight)


def test_stem_channels_last_pool_in_inference_equals_the_nchw_pool():
    """Without autograd on the CPU the stem pools on a channels-last copy: the same values bit for
    bit as the NCHW pool (with autograd, and with the switch off), ties and padding included, and a
    contiguous NCHW output."""
    from detection.modeling.backbone.resnet import Stem

    torch.manual_seed(0)
    stem = Stem(16, lambda c: nn.GroupNorm(8, c)).eval()
    x = torch.randn(2, 3, 37, 50)
    x[:, :, :12] = 0.0  # flat rows: ReLU zeros tie in every window there
    with torch.no_grad():
        fast = stem(x)
        stem.channels_last_pool = False
        nchw = stem(x)
    stem.channels_last_pool = True
    with_grad = stem(x)  # autograd on: the NCHW pool
    assert fast.shape == (2, 16, 10, 13)
    assert fast.is_contiguous()
    assert torch.equal(fast, nchw)
    assert torch.equal(fast, with_grad.detach())
    assert (fast == 0).any() and (fast > 0).any()
