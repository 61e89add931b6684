"""Regularizers and capacity (issue 23): dropout and weight decay as live controls, a
training set of a chosen size, random features against learned ones. Expected numbers
are arithmetic written beside them."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lsml_tui.profilers.flops import count_flops
from lsml_tui.profilers.memory import OUTSIDE, SavedActivationMeter
from lsml_tui.trainer import commands as C
from lsml_tui.trainer import specs
from lsml_tui.trainer.data import build_task
from lsml_tui.trainer.events import CommandApplied, CommandRefused
from lsml_tui.trainer.models import MODELS, set_dropout
from lsml_tui.trainer.optim.optimizers import build_optimizer, set_weight_decay
from tests.conftest import run_cli
from tests.test_trainer import quick, run_with

CPU = torch.device("cpu")
B, D, W, K = 8, 32, 16, 10


def mlp(dropout):
    torch.manual_seed(0)
    return MODELS["mlp"](specs.MLPConfig(in_dim=D, layers=2, width=W, classes=K, norm="none",
                                         dropout=dropout))


# --- dropout ---

def test_dropout_zero_is_no_dropout_bit_for_bit():
    with_slots, without = mlp(0.0), mlp(0.0)
    for block in without.blocks:
        block.drop = nn.Identity()
    x, y = torch.randn(B, D), torch.randint(K, (B,))
    rng = torch.get_rng_state()
    for m in (with_slots, without):
        F.cross_entropy(m(x), y).backward()
    assert torch.equal(rng, torch.get_rng_state())          # p = 0 draws no mask
    assert torch.equal(with_slots(x), without(x))
    for a, b in zip(with_slots.parameters(), without.parameters()):
        assert torch.equal(a.grad, b.grad)


def test_dropout_drops_a_share_p_in_training_scales_the_rest_and_is_off_in_eval():
    m = mlp(0.0)
    assert set_dropout(m, 0.5) == 2                         # one slot per hidden block
    seen = {}
    m.blocks[0].drop.register_forward_hook(lambda mod, i, o: seen.update(i=i[0], o=o))
    m(torch.randn(4096, D))
    kept = seen["o"] != 0
    nonzero_in = seen["i"] != 0                             # ReLU zeroes some inputs already
    share_dropped = 1 - (kept & nonzero_in).sum() / nonzero_in.sum()
    # a Bernoulli(0.5) share over >= 10^4 units: its standard deviation is under 0.005
    assert abs(share_dropped.item() - 0.5) < 0.03
    assert torch.allclose(seen["o"][kept], seen["i"][kept] / (1 - 0.5))   # inverted dropout
    m.eval()
    m(torch.randn(4096, D))
    assert torch.equal(seen["o"], seen["i"])                 # validation runs without it


def test_dropout_saves_its_mask_for_backward():
    y = torch.randint(K, (B,))
    with SavedActivationMeter(m := mlp(0.5)) as meter:
        F.cross_entropy(m(torch.randn(B, D)), y).backward()
    # on the CPU the mask is a float tensor, B * W * 4 bytes (CUDA's fused kernel: a bool)
    assert meter.by_module["blocks.0.drop"] == meter.by_module["blocks.1.drop"] == B * W * 4


def test_dropout_changes_live_at_a_step_and_is_refused_where_it_does_not_apply(tmp_path):
    trainer, rec, _ = run_with(quick(tmp_path, layers=2), [(10, C.SetDropout(0.25)),
                                                           (20, C.SetDropout(1.5))])
    applied, = [e for e in rec.of(CommandApplied) if e.command == "dropout 0.25"]
    assert applied.changes == {"dropout": 0.25, "previous": 0.0}
    assert all(m.p == 0.25 for m in trainer.model.modules() if isinstance(m, nn.Dropout))
    refused, = rec.of(CommandRefused)
    assert "--dropout 1.5 is out of range" in refused.reason
    assert trainer.summary()["dropout"] == 0.25
    _, rec, _ = run_with(quick(tmp_path, model="rnn", width=8, seq_len=5),
                         [(5, C.SetDropout(0.1))])
    refused, = rec.of(CommandRefused)
    assert "dropout does not apply to the rnn model" in refused.reason


@pytest.mark.parametrize("args, message", [
    (("--model", "mlp", "--dropout", "1"), "--dropout 1.0 is out of range: must be in [0, 1)"),
    (("--model", "rnn", "--dropout", "0.1"), "--dropout does not apply to the rnn model"),
    (("--model", "linear", "--train-examples", "10"),
     "--train-examples does not apply to the linear model"),
    (("--model", "cnn", "--train-examples", "0"), "--train-examples 0 is out of range"),
    (("--model", "mlp", "--sigma", "2"), "--sigma does not apply to the mlp model"),
    (("--model", "rff", "--norm", "layer"), "random features are a fixed map"),
])
def test_bad_regularizer_flags_are_refused_in_one_line(args, message):
    proc = run_cli("--headless", *args)
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# --- weight decay, live ---

def one_step_on_a_zero_gradient(name, wd, lr=0.1):
    """Weights before and after one step whose loss gradient is zero: only decay moves them."""
    m = nn.Linear(3, 2)
    opt = build_optimizer(name, m, lr, 0.0, specs.OPTIMIZERS[name].defaults)
    assert set_weight_decay(opt, wd) == 1                   # the matrix's group, not the bias's
    before = m.weight.detach().clone(), m.bias.detach().clone()
    (0 * m(torch.randn(4, 3)).sum()).backward()
    opt.step()
    return before, (m.weight.detach(), m.bias.detach())


def test_decoupled_decay_shrinks_each_weight_by_lr_times_wd():
    (w0, b0), (w1, b1) = one_step_on_a_zero_gradient("adamw", wd=0.5)
    assert torch.allclose(w1, w0 * (1 - 0.1 * 0.5))         # w <- w - lr * wd * w
    assert torch.equal(b1, b0)                              # biases never decay


def test_sgd_decay_is_the_gradient_of_an_l2_penalty():
    (w0, _), (w1, _) = one_step_on_a_zero_gradient("sgd", wd=0.5)
    assert torch.allclose(w1, w0 - 0.1 * 0.5 * w0)          # grad of wd/2 |w|^2 is wd * w


def test_adam_rescales_its_l2_penalty_so_every_weight_moves_by_about_lr():
    (w0, _), (w1, _) = one_step_on_a_zero_gradient("adam", wd=0.5)
    # Adam's first step is lr * g / (|g| + eps) with g = wd * w: lr * sign(w), whatever |w|
    assert torch.allclose(w0 - w1, 0.1 * torch.sign(w0), atol=1e-6)


def test_weight_decay_changes_live_and_survives_a_norm_switch(tmp_path):
    cfg = quick(tmp_path, optimizer="adamw", steps=40)
    trainer, rec, _ = run_with(cfg, [(5, C.SetWeightDecay(0.3)), (15, C.SetNorm("layer"))])
    wd = next(e for e in rec.of(CommandApplied) if e.command == "weight decay 0.3")
    assert wd.changes == {"weight_decay": 0.3, "previous": 0.01}   # AdamW's default 0.01
    assert "decoupled" in wd.detail
    decayed = [g["weight_decay"] for g in trainer.optimizer.param_groups
               if any(p.ndim >= 2 for p in g["params"])]
    assert decayed and all(v == 0.3 for v in decayed)       # the rebuilt optimizer kept it
    assert trainer.summary()["weight_decay"] == 0.3


# --- a training set of a chosen size ---

@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_train_examples_keeps_the_validation_set(model, tmp_path):
    small = build_task(quick(tmp_path, model=model, train_examples=100), CPU)
    large = build_task(quick(tmp_path, model=model, train_examples=20000), CPU)
    default = build_task(quick(tmp_path, model=model), CPU)
    assert len(small.x_train) == len(small.y_train) == 100
    assert len(large.x_train) == 20000
    for task in (small, large):
        assert torch.equal(task.x_val, default.x_val) and torch.equal(task.y_val, default.y_val)
    assert torch.equal(small.x_train, default.x_train[:100])     # the first N of the same set


def test_train_examples_for_text_and_the_adding_problem(tmp_path):
    text = build_task(quick(tmp_path, model="transformer", seq_len=16, train_examples=50), CPU)
    assert len(text.train_tokens) == 50 + 16 + 1            # N windows of T + 1 characters
    gen = torch.Generator().manual_seed(0)
    x, _ = text.batch("train", 64, gen)
    assert x.shape == (64, 16)
    adding = build_task(quick(tmp_path, model="rnn", seq_len=6, train_examples=30), CPU)
    drawn = {tuple(row.flatten().tolist()) for row in adding.batch("train", 500, gen)[0]}
    assert len(drawn) <= 30                                  # a fixed set, not fresh sequences


# --- random features against learned ones ---

def test_random_features_are_frozen_and_cost_forward_flops_only():
    m = MODELS["rff"](specs.RFFConfig(in_dim=D, width=W, classes=K))
    x, y = torch.randn(B, D), torch.randint(K, (B,))
    f = count_flops(m, x, y, F.cross_entropy)
    # the random layer: 2 * B * D * W = 2 * 8 * 32 * 16 = 8192 forward, no backward at all
    # the readout: 2 * B * W * K = 2560 forward; backward its weight gradient only, 2560
    assert f.per_module == {"features": (2 * B * D * W, 0), "head": (2 * B * W * K,
                                                                     2 * B * W * K)}
    with SavedActivationMeter(m) as meter:
        F.cross_entropy(m(x), y).backward()
    # nothing saved for the random layer; the readout keeps its input, B * W * 4 bytes
    assert "features" not in meter.by_module and meter.by_module["head"] == B * W * 4
    assert OUTSIDE in meter.by_module
    assert m.features.weight.grad is None and m.features.bias.grad is None
    assert m.head.weight.grad is not None


def test_random_features_train_beside_the_mlp_on_its_task(tmp_path):
    start = {}
    trainer, _, _ = run_with(quick(tmp_path, model="rff", layers=None, width=64, steps=60),
                             prepare=lambda t: start.update(w=t.model.features.weight.clone()))
    assert torch.equal(build_task(trainer.cfg, CPU).x_val,
                       build_task(quick(tmp_path, model="mlp"), CPU).x_val)  # the same task
    out = trainer.summary()
    assert out["status"] == "finished" and out["final_train_loss"] < out["initial_train_loss"]
    # parameters count the frozen layer (held in memory); gradients only the readout:
    # (32 * 64 + 64) frozen + (64 * 10 + 10) trained; 4 bytes each
    assert out["params"] == 32 * 64 + 64 + 64 * 10 + 10
    assert out["grad_bytes"] == (64 * 10 + 10) * 4
    assert torch.equal(trainer.model.features.weight, start["w"])     # never trained


def test_a_comparison_report_puts_random_features_beside_the_learned_mlp(tmp_path):
    from lsml_tui.tui.report import write_reports
    _, _, learned = run_with(quick(tmp_path, layers=1, width=64, steps=60))
    _, _, random = run_with(quick(tmp_path, model="rff", layers=None, width=64, steps=60))
    md, = write_reports([learned.run_dir, random.run_dir], ["md"], tmp_path)
    table = next(b for b in md.read_text().split("\n\n") if b.startswith("|"))  # the first
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()]
    rows = {c[0]: c[1:] for c in cells}
    assert rows["model"] == ["mlp", "rff"]
    # the same forward FLOPs at batch 128 (2 * 128 * (32 * 64 + 64 * 10) = 688 k); backward:
    # the learned first layer's weight gradient (2 * 128 * 32 * 64 = 524 k) plus the head's
    # two (4 * 128 * 64 * 10 = 328 k), against the random features' head weight only (164 k)
    assert rows["FLOPs fwd / bwd per step"] == ["688 k / 852 k", "688 k / 164 k"]
    # gradient bytes: (32 * 64 + 64 + 64 * 10 + 10) * 4 = 11048 = 10.8 KiB, and the
    # readout's (64 * 10 + 10) * 4 = 2600 = 2.54 KiB
    assert rows["gradients"] == ["10.8 KiB", "2.54 KiB"]
    assert rows["overfitting from step"] == ["not seen", "not seen"]     # 60 steps
