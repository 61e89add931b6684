"""The update guarded on the device and the values read a step late (trainer/guard.py).

The fault policies (stop, pause, skip, a named bad gradient) run with values read
a step late in tests/test_faults.py; here: the guard's arithmetic, the device-side
skip, and that reading late changes nothing about what is trained or recorded.
"""

import math

import pytest
import torch

from lsml_tui.trainer.guard import Guard, ReadBack, fused, grad_norms
from lsml_tui.trainer.store.reader import open_run

from tests.test_faults import nan_loss_from
from tests.test_trainer import quick, run_with

CPU = torch.device("cpu")


def param(*values):
    p = torch.nn.Parameter(torch.tensor(values))
    return p


def test_clip_factor_is_applied_without_a_branch_and_matches_clip_grads_with_norm():
    a, b = param(0.0, 0.0), param(0.0)
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])   # global norm sqrt(9+16) = 5
    per, norm = grad_norms([a, b])
    assert per.tolist() == [3.0, 4.0] and norm.item() == 5.0
    Guard(CPU).clip_and_check([a.grad, b.grad], norm, clip=1.0)
    factor = 1.0 / (5.0 + 1e-6)                                      # clip / (norm + 1e-6)
    assert a.grad.tolist() == pytest.approx([3.0 * factor, 0.0])
    assert b.grad.tolist() == pytest.approx([4.0 * factor])
    c = param(0.0)
    c.grad = torch.tensor([0.5])                                     # under the threshold
    Guard(CPU).clip_and_check([c.grad], grad_norms([c])[1], clip=1.0)
    assert c.grad.item() == 0.5                                      # min(1, 1/0.5) = 1


@pytest.mark.parametrize("make", [
    lambda p: torch.optim.Adam([p], lr=0.1, fused=True),     # skips inside the fused kernel
    lambda p: torch.optim.Adagrad([p], lr=0.1, fused=True),
    lambda p: torch.optim.SGD([p], lr=0.1, momentum=0.9),     # unfused: reads the flag
], ids=["adam-fused", "adagrad-fused", "sgd-unfused"])
def test_a_nan_gradient_never_reaches_the_weights_or_the_optimizer_state(make):
    p = param(1.0, 1.0, 1.0)
    opt, guard = make(p), Guard(CPU)
    p.grad = torch.tensor([1.0, math.nan, 1.0])
    guard.clip_and_check([p.grad], grad_norms([p])[1], clip=1.0)
    assert guard.found_inf.item() == 1.0
    guard.step(opt)
    assert p.tolist() == [1.0, 1.0, 1.0]
    state = opt.state.get(p, {})
    assert all(torch.isfinite(v).all() for v in state.values() if isinstance(v, torch.Tensor))
    if "step" in state:
        assert state["step"].item() == 0                      # the skipped step is not counted
    p.grad = torch.tensor([1.0, 1.0, 1.0])                    # still flagged: still skipped
    guard.clip_and_check([p.grad], grad_norms([p])[1], clip=None)
    guard.step(opt)
    assert p.tolist() == [1.0, 1.0, 1.0]
    guard.clear()                                             # the host has seen the bad step
    guard.clip_and_check([p.grad], grad_norms([p])[1], clip=None)
    guard.step(opt)
    assert all(v < 1.0 for v in p.tolist())                   # now it updates


def test_fused_tells_which_optimizers_skip_on_the_device():
    p = param(1.0)
    assert fused(torch.optim.AdamW([p], fused=True))
    assert not fused(torch.optim.AdamW([p]))


def test_read_back_holds_the_newest_step_until_the_next_one_is_queued():
    rb = ReadBack(CPU, late=True)
    rb.push(0, 0.1, 0.01, torch.tensor([2.0, 1.0]), torch.ones(1))
    assert [e.step for e in rb.ready()] == []                 # step 0 waits for step 1
    rb.push(1, 0.1, 0.01, torch.tensor([1.5, 1.0]), torch.ones(1))
    assert [e.step for e in rb.ready()] == [0]
    assert [e.step for e in rb.ready(keep=0)] == [1]          # draining takes the rest
    now = ReadBack(CPU, late=False)
    now.push(0, 0.1, 0.01, torch.tensor([2.0, 1.0]), torch.ones(1))
    assert [e.step for e in now.ready()] == [0]


def test_reading_late_trains_and_records_exactly_what_reading_now_does(tmp_path):
    free, _, st_free = run_with(quick(tmp_path, steps=50, val_every=25, clip=None))
    with open_run(st_free.run_dir) as r:
        norms = sorted(r.steps()["grad_norm"])
    cfg = quick(tmp_path, steps=50, val_every=25, clip=norms[25])   # about half the steps clip
    now, _, st_now = run_with(cfg)
    late, _, st_late = run_with(cfg, late=True)
    with open_run(st_now.run_dir) as a, open_run(st_late.run_dir) as b:
        rows_now, rows_late = a.steps(), b.steps()
    assert rows_late["step"] == list(range(50))
    for column in ("loss", "grad_norm", "grad_norm_clipped", "clipped"):
        assert rows_late[column] == rows_now[column], column
    assert 0 < sum(rows_late["clipped"]) < 50                # some steps clipped, some not
    for p, q in zip(now.model.parameters(), late.model.parameters()):
        assert torch.equal(p, q)


def test_a_late_stop_leaves_the_weights_of_the_last_good_step(tmp_path):
    """Step 10's NaN is seen only after step 11 was queued: neither update may land."""
    cfg = quick(tmp_path, steps=100)
    stopped, _, _ = run_with(cfg, prepare=nan_loss_from(10), late=True)
    assert stopped.status == "diverged" and stopped.step == 10
    reference, _, _ = run_with(quick(tmp_path, steps=10))    # 10 good steps, same seed
    for p, q in zip(stopped.model.parameters(), reference.model.parameters()):
        assert torch.equal(p, q)
