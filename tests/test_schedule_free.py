"""Schedule-free AdamW (--optimizer adamw-sf): it trains at y and is evaluated at its average
x; at a constant lr it ends much closer to the optimum than AdamW on the linear family; a
live switch away goes on from x, and a switch to it starts it in train mode."""

import copy

import pytest
import torch

from lsml_tui.trainer import commands as C
from lsml_tui.trainer.data import LinearTask
from lsml_tui.trainer.events import CommandApplied, RunFinished
from lsml_tui.trainer.loop import Trainer

from test_theory import linear
from test_trainer import quick, run_with

CPU = torch.device("cpu")


def average_x(trainer) -> list[torch.Tensor]:
    """x from y and z: the optimizer trains at y = (1 - beta1) z + beta1 x, so
    x = y + (1 - 1/beta1)(z - y): the same lerp its eval() does."""
    beta1 = trainer.optimizer.param_groups[0]["betas"][0]
    return [p.detach() + (1 - 1 / beta1) * (trainer.optimizer.state[p]["z"] - p.detach())
            for p in trainer.model.parameters()]


def test_constant_lr_schedule_free_beats_adamw_on_least_squares(tmp_path):
    """Minibatch Adam at a constant lr stays in a noise ball; schedule-free's average x goes on
    towards w*. Excess loss f(x) - f(w*), with f(w*) = |Xw* - y|^2 / 2N from the closed form."""
    excess = {}
    for name in ("adamw", "adamw-sf"):
        cfg = linear(tmp_path / name, optimizer=name, lr=0.05, batch_size=8, noise=0.5,
                     steps=1500, val_every=500, weight_decay=0.0)
        trainer, _, _ = run_with(cfg, store=False)
        task = LinearTask(CPU, cfg.seed, cfg.dim, cfg.kappa, cfg.examples, cfg.noise)
        best = float(0.5 * ((task.x @ task.w_star - task.y) ** 2).mean())
        excess[name] = trainer.last_val_loss - best
    assert excess["adamw"] > 0 and excess["adamw-sf"] >= 0
    assert excess["adamw-sf"] < excess["adamw"] / 5, excess


def test_validation_is_at_x_and_training_goes_on_at_y(tmp_path):
    trainer = Trainer(quick(tmp_path, optimizer="adamw-sf", steps=100, val_every=1000))
    for _ in range(30):
        trainer.advance()
    y = [p.detach().clone() for p in trainer.model.parameters()]
    at_x = copy.deepcopy(trainer.model)
    with torch.no_grad():
        for p, x in zip(at_x.parameters(), average_x(trainer)):
            p.copy_(x)
    assert not all(torch.equal(a, b) for a, b in zip(y, at_x.parameters()))   # x is not y
    trainer.validate()
    assert trainer.last_val_loss == pytest.approx(trainer.val_loss(at_x), rel=1e-5)
    for before, p in zip(y, trainer.model.parameters()):     # back at y (two lerps: rounding)
        assert torch.allclose(before, p, atol=1e-6)
    assert trainer.optimizer.param_groups[0]["train_mode"]


def test_switching_away_goes_on_from_x_and_switching_to_it_trains(tmp_path):
    trainer = Trainer(quick(tmp_path, optimizer="adamw-sf", steps=100, val_every=1000))
    for _ in range(20):
        trainer.advance()
    expected = average_x(trainer)
    trainer.submit(C.SetOptimizer("adam"))
    trainer.drain_commands()
    assert trainer.optimizer_name == "adam"
    for x, p in zip(expected, trainer.model.parameters()):
        assert torch.allclose(x, p, atol=1e-6)
    # and into it from Adam: built in train mode, so its first step runs
    cfg = quick(tmp_path / "into", optimizer="adam", steps=30)
    _, rec, _ = run_with(cfg, [(10, C.SetOptimizer("adamw-sf"))], store=False)
    applied, = [e for e in rec.of(CommandApplied) if e.command.startswith("optimizer")]
    assert "adam -> adamw-sf" in applied.detail and "state starts fresh" in applied.detail
    assert rec.of(RunFinished)[-1].status == "finished"


def test_the_switch_message_says_where_the_weights_go_on_from(tmp_path):
    cfg = quick(tmp_path, optimizer="adamw-sf", steps=30)
    _, rec, _ = run_with(cfg, [(10, C.SetOptimizer("sgd"))], store=False)
    applied, = [e for e in rec.of(CommandApplied) if e.command.startswith("optimizer")]
    assert "the weights go on from adamw-sf's average x" in applied.detail
