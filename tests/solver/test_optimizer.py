"""Optimizer parameter groups, SGD and AdamW, and the warmup multi-step and cosine schedules."""

import pytest
import torch
from torch import nn

from detection.config import cfg as _defaults
from detection.solver import (
    build_lr_scheduler,
    build_optimizer,
    get_param_groups,
    warmup_cosine_factor,
    warmup_multistep_factor,
)


class _Net(nn.Module):
    """Conv + GroupNorm + a deformable-style offset predictor and RoI-pool fc branches."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=True)
        self.gn = nn.GroupNorm(2, 4)
        self.bn = nn.BatchNorm2d(4)
        self.conv_offset = nn.Conv2d(4, 18, 3)
        self.pool = nn.Module()
        self.pool.offset_fc = nn.Linear(4, 4)
        self.pool.mask_fc = nn.Linear(4, 4)
        self.fc = nn.Linear(4, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def _cfg(**solver):
    c = _defaults.clone()
    for k, v in solver.items():
        c.SOLVER[k] = v
    return c


def _groups_by_name(opt):
    return {g["name"]: g for g in opt.param_groups}


def test_param_group_rules():
    base_lr, wd = 0.02, 1e-4
    c = _cfg(
        BASE_LR=base_lr,
        WEIGHT_DECAY=wd,
        BIAS_LR_FACTOR=2.0,
        WEIGHT_DECAY_BIAS=0.0,
        WEIGHT_DECAY_NORM=0.0,
        OFFSET_LR_FACTOR=0.1,
    )
    net = _Net()
    groups = _groups_by_name(build_optimizer(c, net))
    expected = {
        "conv.weight": (base_lr, wd),
        "conv.bias": (base_lr * 2.0, 0.0),
        "gn.weight": (base_lr, 0.0),
        "gn.bias": (base_lr * 2.0, 0.0),
        "bn.weight": (base_lr, 0.0),
        "bn.bias": (base_lr * 2.0, 0.0),
        "conv_offset.weight": (base_lr * 0.1, wd),
        "conv_offset.bias": (base_lr * 2.0 * 0.1, 0.0),
        "pool.offset_fc.weight": (base_lr * 0.1, wd),
        "pool.offset_fc.bias": (base_lr * 2.0 * 0.1, 0.0),
        "pool.mask_fc.weight": (base_lr * 0.1, wd),
        "pool.mask_fc.bias": (base_lr * 2.0 * 0.1, 0.0),
        "fc.weight": (base_lr, wd),
        "fc.bias": (base_lr * 2.0, 0.0),
    }
    assert set(groups) == set(expected), (
        "frozen parameters must be left out, all trainable ones kept"
    )
    for name, (lr, decay) in expected.items():
        assert groups[name]["lr"] == pytest.approx(lr), name
        assert groups[name]["weight_decay"] == pytest.approx(decay), name


def test_norm_and_bias_decay_configurable():
    c = _cfg(WEIGHT_DECAY=1e-4, WEIGHT_DECAY_NORM=3e-5, WEIGHT_DECAY_BIAS=7e-5)
    groups = _groups_by_name(build_optimizer(c, _Net()))
    assert groups["gn.weight"]["weight_decay"] == pytest.approx(3e-5)
    assert groups["bn.weight"]["weight_decay"] == pytest.approx(3e-5)
    assert groups["bn.bias"]["weight_decay"] == pytest.approx(7e-5)  # a bias first
    assert groups["fc.bias"]["weight_decay"] == pytest.approx(7e-5)
    assert groups["fc.weight"]["weight_decay"] == pytest.approx(1e-4)


def test_shared_parameter_counted_once():
    net = nn.Sequential(nn.Linear(2, 2))
    net.add_module("again", net[0])
    groups = get_param_groups(net, base_lr=0.1, weight_decay=0.0)
    assert len(groups) == 2


def test_optimizer_is_sgd_with_momentum_and_steps():
    c = _cfg(BASE_LR=0.5, MOMENTUM=0.9, WEIGHT_DECAY=0.0, BIAS_LR_FACTOR=1.0)
    lin = nn.Linear(1, 1, bias=False)
    lin.weight.data.fill_(1.0)
    opt = build_optimizer(c, lin)
    assert isinstance(opt, torch.optim.SGD)
    for _ in range(2):  # d(loss)/dw = 1: v1 = 1, v2 = 0.9 + 1
        opt.zero_grad()
        lin.weight.sum().backward()
        opt.step()
    assert lin.weight.item() == pytest.approx(1.0 - 0.5 * 1.0 - 0.5 * 1.9)


def test_bad_base_lr_names_key():
    with pytest.raises(ValueError, match="SOLVER.BASE_LR"):
        build_optimizer(_cfg(BASE_LR=0.0), _Net())


def _lrs(c, n):
    net = nn.Linear(1, 1, bias=False)
    opt = build_optimizer(c, net)
    sched = build_lr_scheduler(c, opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_linear_warmup_then_steps():
    base, f, w = 0.1, 0.25, 4
    c = _cfg(
        BASE_LR=base,
        WARMUP_FACTOR=f,
        WARMUP_ITERS=w,
        WARMUP_METHOD="linear",
        STEPS=(6, 8),
        GAMMA=0.1,
    )
    lrs = _lrs(c, 10)
    expected = (
        [base * (f + (1 - f) * i / w) for i in range(w)]
        + [base] * 2
        + [base * 0.1] * 2
        + [base * 0.01] * 2
    )
    assert lrs == pytest.approx(expected)


def test_constant_warmup():
    c = _cfg(
        BASE_LR=0.1,
        WARMUP_FACTOR=0.5,
        WARMUP_ITERS=3,
        WARMUP_METHOD="constant",
        STEPS=(4,),
        GAMMA=0.5,
    )
    assert _lrs(c, 6) == pytest.approx([0.05, 0.05, 0.05, 0.1, 0.05, 0.05])


def test_scheduler_state_dict_resumes_schedule():
    c = _cfg(BASE_LR=0.1, WARMUP_ITERS=5, STEPS=(7,))
    net = nn.Linear(1, 1)
    opt = build_optimizer(c, net)
    sched = build_lr_scheduler(c, opt)
    for _ in range(6):
        opt.step()
        sched.step()
    state, opt_state = sched.state_dict(), opt.state_dict()
    net2 = nn.Linear(1, 1)
    opt2 = build_optimizer(c, net2)
    sched2 = build_lr_scheduler(c, opt2)
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(state)
    for _ in range(3):
        assert [g["lr"] for g in opt2.param_groups] == pytest.approx(
            [g["lr"] for g in opt.param_groups]
        )
        opt.step(), sched.step(), opt2.step(), sched2.step()


def test_factor_function_and_errors():
    assert warmup_multistep_factor(0, (2,), 0.1, 0.3, 0, "linear") == 1.0  # no warmup
    assert warmup_multistep_factor(2, (2,), 0.1, 0.3, 0, "linear") == pytest.approx(0.1)
    with pytest.raises(ValueError, match="SOLVER.WARMUP_METHOD"):
        _lrs(_cfg(WARMUP_METHOD="cosine"), 1)
    with pytest.raises(ValueError, match="SOLVER.STEPS"):
        _lrs(_cfg(STEPS=(8, 6)), 1)


def test_adamw_keeps_the_group_rules_and_reads_betas():
    kw = dict(BASE_LR=0.02, WEIGHT_DECAY=0.05, BIAS_LR_FACTOR=2.0, OFFSET_LR_FACTOR=0.1)
    sgd = build_optimizer(_cfg(**kw), _Net())
    adamw = build_optimizer(_cfg(OPTIMIZER="AdamW", BETAS=(0.8, 0.99), **kw), _Net())
    assert type(sgd) is torch.optim.SGD and type(adamw) is torch.optim.AdamW
    assert [(g["name"], g["lr"], g["weight_decay"]) for g in adamw.param_groups] == [
        (g["name"], g["lr"], g["weight_decay"]) for g in sgd.param_groups
    ]
    assert all(g["betas"] == (0.8, 0.99) for g in adamw.param_groups)


def test_adamw_decay_is_decoupled():
    # With a zero gradient Adam's update is zero, so one AdamW step only decays the weight:
    # w <- w * (1 - lr * weight_decay). SGD's L2 decay would instead move it by lr * wd * w and
    # momentum; Adam's coupled decay would divide it by the gradient's running scale.
    lin = nn.Linear(2, 1, bias=False)
    w0 = lin.weight.detach().clone()
    opt = build_optimizer(_cfg(OPTIMIZER="AdamW", BASE_LR=0.1, WEIGHT_DECAY=0.5), lin)
    lin.weight.grad = torch.zeros_like(lin.weight)
    opt.step()
    torch.testing.assert_close(lin.weight.detach(), w0 * (1 - 0.1 * 0.5))


def test_unknown_optimizer_and_scheduler_name_the_key():
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_optimizer(_cfg(OPTIMIZER="Adam"), _Net())
    with pytest.raises(ValueError, match="SOLVER.LR_SCHEDULER_NAME"):
        _lrs(_cfg(LR_SCHEDULER_NAME="WarmupPolyLR"), 1)


def test_cosine_without_warmup_matches_torch_cosine_annealing():
    base, end, n = 0.1, 0.004, 12
    c = _cfg(
        BASE_LR=base,
        BASE_LR_END=end,
        MAX_ITER=n,
        WARMUP_ITERS=0,
        LR_SCHEDULER_NAME="WarmupCosineLR",
    )
    lin = nn.Linear(1, 1, bias=False)
    opt = torch.optim.SGD(lin.parameters(), lr=base)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=n, eta_min=end)
    expected = []
    for _ in range(n + 1):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    lrs = _lrs(c, n + 3)
    assert lrs[: n + 1] == pytest.approx(expected)
    assert lrs[n:] == pytest.approx([end] * 3)  # held at the end value after MAX_ITER


def test_cosine_warmup_multiplies_the_decay():
    base, f, w, n = 0.1, 0.25, 4, 20
    c = _cfg(
        BASE_LR=base,
        MAX_ITER=n,
        WARMUP_FACTOR=f,
        WARMUP_ITERS=w,
        WARMUP_METHOD="linear",
        LR_SCHEDULER_NAME="WarmupCosineLR",
    )
    no_warmup = _lrs(
        _cfg(BASE_LR=base, MAX_ITER=n, WARMUP_ITERS=0, LR_SCHEDULER_NAME="WarmupCosineLR"), n
    )
    warm = [f + (1 - f) * i / w for i in range(w)] + [1.0] * (n - w)
    assert _lrs(c, n) == pytest.approx([x * y for x, y in zip(no_warmup, warm)])
    assert warmup_cosine_factor(n // 2, n, 0.0, f, 0, "linear") == pytest.approx(0.5)


def test_cosine_scales_every_group_by_one_factor():
    c = _cfg(
        BASE_LR=0.02,
        BASE_LR_END=0.002,
        BIAS_LR_FACTOR=2.0,
        MAX_ITER=10,
        WARMUP_ITERS=0,
        LR_SCHEDULER_NAME="WarmupCosineLR",
    )
    net = nn.Linear(1, 1)
    opt = build_optimizer(c, net)
    sched = build_lr_scheduler(c, opt)
    for _ in range(10):
        opt.step()
        sched.step()
    lrs = _groups_by_name(opt)
    assert lrs["weight"]["lr"] == pytest.approx(0.002)
    assert lrs["bias"]["lr"] == pytest.approx(0.004)


def test_cosine_state_dict_resumes_schedule():
    c = _cfg(BASE_LR=0.1, WARMUP_ITERS=3, MAX_ITER=10, LR_SCHEDULER_NAME="WarmupCosineLR")
    net = nn.Linear(1, 1)
    opt = build_optimizer(c, net)
    sched = build_lr_scheduler(c, opt)
    for _ in range(5):
        opt.step()
        sched.step()
    opt2 = build_optimizer(c, nn.Linear(1, 1))
    sched2 = build_lr_scheduler(c, opt2)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    for _ in range(6):
        assert [g["lr"] for g in opt2.param_groups] == pytest.approx(
            [g["lr"] for g in opt.param_groups]
        )
        opt.step(), sched.step(), opt2.step(), sched2.step()


def _fill_grads(net, seed):
    g = torch.Generator().manual_seed(seed)
    for p in net.parameters():
        if p.requires_grad:
            p.grad = torch.randn(p.shape, generator=g)


def _trained(opt_of, net, steps, seed=0):
    """`net` after `steps` updates of `opt_of(net)` with seeded random gradients."""
    opt = opt_of(net)
    for i in range(steps):
        _fill_grads(net, seed + i)
        opt.step()
    return opt


def _default_loop(c):
    # torch's own per-parameter loop over build_optimizer's groups: the reference the fused
    # kernels match (torch reads each group's "fused" at every step)
    def make(net):
        opt = build_optimizer(c, net)
        for group in opt.param_groups:
            group["fused"] = None
        return opt

    return make


@pytest.mark.parametrize("name", ["SGD", "AdamW"])
def test_cpu_optimizers_use_the_fused_kernels_with_the_default_loops_update(name):
    c = _cfg(OPTIMIZER=name, BASE_LR=0.05, WEIGHT_DECAY=0.01, BIAS_LR_FACTOR=2.0)
    torch.manual_seed(0)
    net = _Net()
    ref = _Net()
    ref.load_state_dict(net.state_dict())
    opt = _trained(lambda m: build_optimizer(c, m), net, 4)
    _trained(_default_loop(c), ref, 4)
    assert all(g["fused"] for g in opt.param_groups)
    for (n, p), q in zip(net.named_parameters(), ref.parameters()):
        # the same update up to float rounding (the kernels fuse multiply-adds)
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6, msg=n)


@pytest.mark.parametrize("name", ["SGD", "AdamW"])
def test_a_default_loop_checkpoint_resumes_on_the_fused_kernels(name):
    # A checkpoint written before the fused kernels (or on a device without them) carries
    # fused=None in its groups; loading it must neither switch the kernels off nor change the run.
    c = _cfg(OPTIMIZER=name, BASE_LR=0.05, WEIGHT_DECAY=0.0)
    torch.manual_seed(0)
    net = _Net()
    start = {k: v.clone() for k, v in net.state_dict().items()}
    saved = _trained(_default_loop(c), net, 2).state_dict()
    assert all(g["fused"] is None for g in saved["param_groups"])
    after_two = {k: v.clone() for k, v in net.state_dict().items()}
    opt = build_optimizer(c, net)
    opt.load_state_dict(saved)
    assert all(g["fused"] for g in opt.param_groups)
    for i in range(2, 4):
        _fill_grads(net, i)
        opt.step()
    ref = _Net()
    ref.load_state_dict(start)
    _trained(_default_loop(c), ref, 4)  # four uninterrupted steps of the default loop
    for (n, p), q in zip(net.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6, msg=n)
    assert not torch.equal(net.conv.weight, after_two["conv.weight"])


def test_a_checkpoint_with_other_groups_is_still_refused():
    c = _cfg()
    saved = build_optimizer(c, nn.Linear(2, 2)).state_dict()  # two groups (weight, bias)
    opt = build_optimizer(c, nn.Linear(2, 2, bias=False))
    with pytest.raises(ValueError, match="number of parameter groups"):
        opt.load_state_dict(saved)
