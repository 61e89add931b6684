"""Faults injected into the real trainer and store: divergence policies, rewind,
non-finite gradients, out of memory. Each row of the README's fault table that
lives in the trainer has a test here."""

import math
import queue
import threading
import time

import pytest
import torch

from lsml_tui.trainer import commands as C
from lsml_tui.trainer.events import (CommandApplied, CommandRefused, Diverged, NonFiniteGradients,
                                     OutOfMemory, StepMetrics)
from lsml_tui.trainer.loop import Trainer
from lsml_tui.trainer.store.reader import open_run

from tests.test_trainer import new_store, quick, run_with, wait_for

# Each policy holds whether a step's values are read at once (CPU) or a step late, after
# the next step is queued (CUDA; here the same logic on CPU): see trainer/guard.py.
LATE = pytest.mark.parametrize("late", [False, True], ids=["read-now", "read-late"])


class Live:
    """The trainer on a thread, its events on a queue; always stopped at the end."""

    def __init__(self, cfg, prepare=None, late=None):
        self.events: queue.Queue = queue.Queue()
        self.store = new_store(cfg)
        self.trainer = Trainer(cfg, sink=lambda batch: [self.events.put(e) for e in batch],
                               store=self.store, late_readback=late)
        if prepare:
            prepare(self.trainer)
        self.thread = threading.Thread(target=self.trainer.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.trainer.submit(C.Stop())
        self.thread.join(timeout=60)
        self.store.close()

    def wait(self, cls, predicate=lambda e: True):
        return wait_for(self.events, cls, predicate)


def nan_loss_from(step):
    """Make the task's loss NaN from `step` on (the model and data are untouched)."""
    def prepare(trainer):
        loss = trainer.task.loss
        trainer.task.loss = lambda out, y: loss(out, y) * (math.nan if trainer.step >= step else 1.0)
    return prepare


@LATE
def test_on_diverge_pause_then_lower_lr_rewind_and_resume(tmp_path, late):
    cfg = quick(tmp_path, optimizer="sgd", lr=1e6, clip=None, steps=10**6, on_diverge="pause",
                snapshot_every=5)
    with Live(cfg, late=late) as live:
        diverged = live.wait(Diverged)
        assert diverged.action == "pause" and "rewind" in diverged.message
        assert live.trainer.paused and live.trainer.step == diverged.step   # nothing recorded
        live.trainer.submit(C.SetLR(1e-3))
        live.trainer.submit(C.Rewind())
        rewound = live.wait(CommandApplied, lambda e: e.command == "rewind")
        good = rewound.changes["rewound_to"]
        assert good <= diverged.step and good % cfg.snapshot_every == 0
        live.trainer.submit(C.Resume())
        after = live.wait(StepMetrics, lambda e: e.step >= diverged.step + 20)
        assert math.isfinite(after.loss)                  # lower lr from good weights: trains
    with open_run(live.store.run_dir) as r:
        steps = r.steps()
    assert steps["step"] == list(range(len(steps["step"])))    # no gap, nothing twice
    assert all(math.isfinite(v) for v in steps["loss"])        # the NaN step was never recorded


@LATE
def test_on_diverge_skip_counts_and_stops_after_the_skip_limit(tmp_path, late):
    cfg = quick(tmp_path, on_diverge="skip", skip_limit=3, steps=100)
    trainer, rec, st = run_with(cfg, prepare=nan_loss_from(5), late=late)
    skipped = rec.of(NonFiniteGradients)
    assert [e.step for e in skipped] == [5, 6, 7]              # 3 in a row, then stop
    assert all(e.parameter == "(loss)" for e in skipped)
    stop, = rec.of(Diverged)
    assert stop.action == "stop" and "--skip-limit 3" in stop.message
    assert trainer.status == "diverged" and trainer.skipped_steps == 3
    with open_run(st.run_dir) as r:
        info, steps = r.info(), r.steps()
    assert info.status == "diverged" and steps["step"] == list(range(8))
    assert info.summary["final_train_loss"] is not None and math.isfinite(
        info.summary["final_train_loss"])                     # the mean skips the NaNs


@LATE
def test_non_finite_gradients_are_skipped_named_and_stop_after_k_in_a_row(tmp_path, late):
    cfg = quick(tmp_path, skip_limit=4, steps=100)

    def poison(trainer):                       # a finite loss, a NaN gradient for one weight
        name, param = list(trainer.model.named_parameters())[-1]
        param.register_hook(lambda g: g * math.nan if trainer.step >= 10 else g)
        trainer.poisoned = name
    trainer, rec, st = run_with(cfg, prepare=poison, late=late)
    skipped = rec.of(NonFiniteGradients)
    assert [e.step for e in skipped] == [10, 11, 12, 13]
    assert all(e.parameter == trainer.poisoned and math.isfinite(e.loss) for e in skipped)
    assert rec.of(Diverged)[0].action == "stop" and trainer.status == "diverged"


@LATE
def test_one_bad_gradient_is_skipped_and_training_goes_on(tmp_path, late):
    cfg = quick(tmp_path, skip_limit=2, steps=40)

    def poison_once(trainer):
        param = trainer.params[0]
        param.register_hook(lambda g: g * math.nan if trainer.step == 7 else g)
    trainer, rec, st = run_with(cfg, prepare=poison_once, late=late)
    assert [e.step for e in rec.of(NonFiniteGradients)] == [7]
    assert trainer.status == "finished" and trainer.skipped_steps == 1


@pytest.mark.parametrize("error", [
    lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    lambda: RuntimeError("[enforce fail] DefaultCPUAllocator: not enough memory: out of memory"),
])
def test_out_of_memory_pauses_with_a_hint_and_loses_nothing(tmp_path, error):
    cfg = quick(tmp_path, steps=10**6)

    def fail_once(trainer):
        forward = trainer.model.forward
        state = {"raised": False}

        def flaky(x):
            if trainer.step == 8 and not state["raised"]:
                state["raised"] = True
                raise error()
            return forward(x)
        trainer.model.forward = flaky
    with Live(cfg, prepare=fail_once) as live:
        oom = live.wait(OutOfMemory)
        assert oom.step == 8 and "--batch-size" in oom.message and "paused" in oom.message
        assert live.trainer.paused and live.trainer.status == "running"    # alive
        live.trainer.submit(C.Resume())
        live.wait(StepMetrics, lambda e: e.step >= 20)
    with open_run(live.store.run_dir) as r:
        steps = r.steps()
        kinds = [e["kind"] for e in r.events()]
    assert steps["step"] == list(range(len(steps["step"])))    # step 8 retried, none lost
    assert "OutOfMemory" in kinds


def test_rewind_refuses_when_the_norm_changed_since_the_snapshot(tmp_path):
    cfg = quick(tmp_path, steps=10**6, snapshot_every=10**6)   # only the step-0 snapshot
    with Live(cfg) as live:
        live.wait(StepMetrics)
        live.trainer.submit(C.SetNorm("layer"))
        live.wait(CommandApplied, lambda e: e.command == "norm layer")
        live.trainer.submit(C.Rewind())
        refused = live.wait(CommandRefused)
        assert "switch the norm back" in refused.reason
        live.wait(StepMetrics, lambda e: e.step > refused.step + 5)     # training goes on


def test_a_full_disk_warns_drops_metrics_at_the_bound_and_resumes(tmp_path, monkeypatch):
    import sqlite3

    from lsml_tui.trainer.store import writer as store_module
    from lsml_tui.trainer.events import RecordingProblem
    steps = 1500
    cfg = quick(tmp_path, steps=steps, profile=False, val_every=10**6)
    real_commit, full = store_module.commit, {"on": False}

    def commit(con, items):
        if full["on"]:
            raise sqlite3.OperationalError("database or disk is full")
        return real_commit(con, items)
    monkeypatch.setattr(store_module, "commit", commit)

    def disk_fills_then_frees(trainer):
        trainer.store.max_pending = 100                     # a small bound, reached quickly
        record = trainer.record_step

        def record_and_toggle(*args):
            full["on"] = 50 <= trainer.step < 900           # full from step 50 to step 899
            if trainer.step == 899:
                time.sleep(0.6)                             # let a failing commit happen first
            record(*args)
        trainer.record_step = record_and_toggle
    trainer, rec, st = run_with(cfg, prepare=disk_fills_then_frees)
    problems = rec.of(RecordingProblem)
    assert "disk is full" in problems[0].message and "resumed" in problems[-1].message
    with open_run(st.run_dir) as r:
        stored, info = r.steps()["step"], r.info()
        kinds = [e["kind"] for e in r.events()]
        assert r.integrity_ok()
    assert st.dropped["steps"] > 0
    assert len(stored) + st.dropped["steps"] == steps       # every step stored or counted
    assert stored[:50] == list(range(50)) and stored[-1] == steps - 1   # before and after
    assert info.status == "finished" and kinds.count("RecordingProblem") == len(problems)
