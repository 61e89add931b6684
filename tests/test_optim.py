"""Optimizers build and step; switches carry state whose meaning survives; schedules."""

import math

import pytest
import torch

from lsml_tui.trainer import specs
from lsml_tui.trainer.models import MODELS, set_norm
from lsml_tui.trainer.optim.optimizers import (build_optimizer, nadam_mu_product,
                                               rebuild_keeping_state, switch_optimizer)
from lsml_tui.trainer.optim.schedules import lr_factor


def mlp(norm="none"):
    torch.manual_seed(0)
    return MODELS["mlp"](specs.MLPConfig(layers=2, width=16, norm=norm))


def train(model, opt, steps=3):
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 32, generator=g)
        y = torch.randint(10, (8,), generator=g)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", list(specs.OPTIMIZERS))
def test_every_optimizer_builds_and_updates_every_parameter(name):
    model = mlp("layer")
    spec = specs.OPTIMIZERS[name]
    opt = build_optimizer(name, model, spec.lr, spec.weight_decay, dict(spec.defaults))
    before = [p.detach().clone() for p in model.parameters()]
    train(model, opt)
    for b, p in zip(before, model.parameters()):
        assert torch.isfinite(p).all()
        assert not torch.equal(b, p)


def hp(name):
    return dict(specs.OPTIMIZERS[name].defaults)


@pytest.mark.parametrize("new", ["adamw", "nadam", "radam"])
def test_adam_family_switch_keeps_the_moments(new):
    model = mlp()
    old = build_optimizer("adam", model, 1e-3, 0.0, hp("adam"))
    train(model, old)
    snapshot = {p: {k: v.clone() for k, v in s.items()} for p, s in old.state.items()}
    opt, carried = switch_optimizer(old, "adam", new, model, 1e-3, 0.0, hp(new))
    assert carried == ("step", "exp_avg", "exp_avg_sq")
    assert type(opt).__name__.lower() == new
    for p, s in snapshot.items():
        for k in carried:
            assert torch.equal(opt.state[p][k], s[k])
    train(model, opt)  # and it steps on from there: 3 + 3 steps
    assert all(int(s["step"]) == 6 for s in opt.state.values())


def test_momentum_to_nesterov_keeps_the_velocity_and_adam_to_sgd_starts_fresh():
    model = mlp()
    old = build_optimizer("momentum", model, 0.05, 0.0, hp("momentum"))
    train(model, old)
    buffers = {p: s["momentum_buffer"].clone() for p, s in old.state.items()}
    opt, carried = switch_optimizer(old, "momentum", "nesterov", model, 0.05, 0.0, hp("nesterov"))
    assert carried == ("momentum_buffer",) and opt.param_groups[0]["nesterov"]
    assert all(torch.equal(opt.state[p]["momentum_buffer"], b) for p, b in buffers.items())

    adam = build_optimizer("adam", model, 1e-3, 0.0, hp("adam"))
    train(model, adam)
    opt, carried = switch_optimizer(adam, "adam", "momentum", model, 0.05, 0.0, hp("momentum"))
    assert carried == () and len(opt.state) == 0


def test_nadam_mu_product_matches_nadams_own_after_switching_in():
    model = mlp()
    nadam = build_optimizer("nadam", model, 1e-3, 0.0, hp("nadam"))
    train(model, nadam, steps=5)
    own = next(iter(nadam.state.values()))["mu_product"].item()
    assert math.isclose(nadam_mu_product(5, 0.9), own, rel_tol=1e-6)


def test_norm_swap_rebuild_keeps_state_of_unchanged_parameters_only():
    model = mlp("layer")
    old = build_optimizer("adam", model, 1e-3, 0.0, hp("adam"))
    train(model, old)
    unchanged = [p for n, p in model.named_parameters() if ".norm." not in n]
    set_norm(model, "rms")
    new, kept = rebuild_keeping_state(old, "adam", model, 1e-3, 0.0, hp("adam"))
    # 2 blocks x (weight, bias) + head (weight, bias) = 6 unchanged tensors
    assert kept == len(unchanged) == 2 * 2 + 2
    assert all(new.state[p] is old.state[p] for p in unchanged)
    fresh = [p for n, p in model.named_parameters() if ".norm." in n]
    assert fresh and all(p not in new.state for p in fresh)


def test_schedules():
    total, warm, every = 1000, 100, 250
    f = lambda name, step: lr_factor(name, step, total, warm, every)  # noqa: E731
    assert f("constant", 999) == 1.0
    assert f("warmup-cosine", 0) == 1 / warm                 # (0 + 1) / 100
    assert f("warmup-cosine", warm - 1) == 1.0
    assert math.isclose(f("warmup-cosine", total), 0.1)      # decays to min_ratio
    mid = warm + (total - warm) // 2                         # cos(pi/2) = 0 -> halfway
    assert math.isclose(f("warmup-cosine", mid), 0.1 + 0.9 * 0.5)
    assert f("step", every - 1) == 1.0 and f("step", every) == 0.5 and f("step", 2 * every) == 0.25
    assert f("inverse-time", every) == 0.5                   # 1 / (1 + 250/250)
    assert math.isclose(f("inverse-time", 3 * every), 0.25)  # 1 / (1 + 3)
