"""Every live command, applied by the real trainer between steps and recorded in the store."""

import json
import queue
import subprocess
import sys
import threading

import pytest
import torch

from lsml_tui.trainer import commands as C
from lsml_tui.trainer import specs
from lsml_tui.trainer.config import RunConfig, to_toml
from lsml_tui.trainer.validate import resolve
from lsml_tui.trainer.events import (CommandApplied, CommandRefused, Diverged, RunFinished,
                                     StepMetrics)
from lsml_tui.trainer.loop import Trainer
from lsml_tui.trainer.models import NormSlot
from lsml_tui.trainer.store.writer import RunStore
from lsml_tui.trainer.store.reader import open_run


def quick(tmp_path, **changes):
    base = dict(model="mlp", layers=1, width=16, steps=60, val_every=20, val_batches=1,
                runs_dir=str(tmp_path / "runs"))
    return resolve(RunConfig(**{**base, **changes}))


def new_store(cfg):
    return RunStore.create(cfg.runs_dir, cfg.to_dict(), to_toml(cfg))


class Recorder:
    """A sink that keeps every event and can submit a command once a step is reached."""

    def __init__(self):
        self.events, self.trainer, self.plan = [], None, []

    def at(self, step, cmd):
        self.plan.append((step, cmd))

    def __call__(self, batch):
        self.events.extend(batch)
        seen = max((e.step for e in batch if isinstance(e, StepMetrics)), default=-1)
        for item in [p for p in self.plan if p[0] <= seen]:
            self.plan.remove(item)
            self.trainer.submit(item[1])

    def of(self, cls):
        return [e for e in self.events if isinstance(e, cls)]


def run_with(cfg, plan=(), store=True, prepare=None, late=None):
    """Run `cfg` to its end; `prepare(trainer)` may inject a fault before it starts.

    ``late=True`` reads each step's values a step late, as on CUDA (guard.py), here on CPU."""
    rec = Recorder()
    st = new_store(cfg) if store else None
    trainer = Trainer(cfg, sink=rec, store=st, event_rate=float("inf"),  # the sink sees every step
                      late_readback=late)
    rec.trainer = trainer
    if prepare:
        prepare(trainer)
    for step, cmd in plan:
        rec.at(step, cmd)
    trainer.run()
    if st:
        st.close()
    return trainer, rec, st


def test_set_lr_takes_effect_at_the_step_the_event_names(tmp_path):
    cfg = quick(tmp_path)
    trainer, rec, st = run_with(cfg, [(10, C.SetLR(0.0123))])
    applied, = rec.of(CommandApplied)
    assert applied.command == "lr 0.0123" and 10 < applied.step < cfg.steps
    with open_run(st.run_dir) as r:
        steps = r.steps()
        events = r.events("CommandApplied")
    lrs = dict(zip(steps["step"], steps["lr"]))
    assert all(lrs[s] == cfg.lr for s in range(applied.step))
    assert all(lrs[s] == 0.0123 for s in range(applied.step, cfg.steps))
    assert events[0]["step"] == applied.step and events[0]["command"] == "lr 0.0123"


def test_set_clip_tiny_clips_every_step_and_off_clips_none(tmp_path):
    cfg = quick(tmp_path, clip=None)
    trainer, rec, st = run_with(cfg, [(10, C.SetClip(1e-6)), (30, C.SetClip(None))])
    tiny, off = rec.of(CommandApplied)
    with open_run(st.run_dir) as r:
        clipped = dict(zip(*(r.steps()[k] for k in ("step", "clipped"))))
    assert not any(clipped[s] for s in range(tiny.step))
    assert all(clipped[s] for s in range(tiny.step, off.step))  # every norm exceeds 1e-6
    assert not any(clipped[s] for s in range(off.step, cfg.steps))
    assert trainer.clip_count == off.step - tiny.step


def test_switch_adam_to_adamw_carries_the_moments_through_the_trainer(tmp_path):
    cfg = quick(tmp_path)
    trainer, rec, _ = run_with(cfg, [(20, C.SetOptimizer("adamw"))])
    applied, = rec.of(CommandApplied)
    assert applied.changes["carried"] == ["step", "exp_avg", "exp_avg_sq"]
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    # Carried, Adam's step counter runs on over the whole run: 60, not 60 - applied.step.
    assert all(int(s["step"]) == cfg.steps for s in trainer.optimizer.state.values())


def test_switch_to_an_unknown_optimizer_is_refused_and_training_goes_on(tmp_path):
    cfg = quick(tmp_path)
    trainer, rec, _ = run_with(cfg, [(5, C.SetOptimizer("adamm"))])
    refused, = rec.of(CommandRefused)
    assert "did you mean 'adam'" in refused.reason
    assert trainer.step == cfg.steps and isinstance(trainer.optimizer, torch.optim.Adam)


def test_set_norm_swaps_live_and_a_nonsense_norm_is_refused(tmp_path):
    cfg = quick(tmp_path, model="rnn", width=8, seq_len=5)
    trainer, rec, _ = run_with(cfg, [(5, C.SetNorm("layer")), (15, C.SetNorm("batch"))])
    applied, = rec.of(CommandApplied)
    refused, = rec.of(CommandRefused)
    assert applied.changes == {"norm": "layer", "previous": "none"}
    assert "per time step" in refused.reason
    assert all(s.kind == "layer" for s in trainer.model.modules() if isinstance(s, NormSlot))
    assert trainer.step == cfg.steps and trainer.status == "finished"


def wait_for(q, cls, pred=lambda e: True, timeout=60):
    while True:
        e = q.get(timeout=timeout)
        if isinstance(e, cls) and pred(e):
            return e


def test_pause_single_step_resume_and_stop_from_another_thread(tmp_path):
    cfg = quick(tmp_path, steps=10**6)
    events: queue.Queue = queue.Queue()
    st = new_store(cfg)
    trainer = Trainer(cfg, sink=lambda batch: [events.put(e) for e in batch], store=st)
    thread = threading.Thread(target=trainer.run, daemon=True)
    thread.start()
    try:
        pause_step_resume_stop(trainer, events, st)
    finally:
        trainer.submit(C.Stop())
        thread.join(timeout=60)
        st.close()


def pause_step_resume_stop(trainer, events, st):
    wait_for(events, StepMetrics)
    trainer.submit(C.Pause())
    paused = wait_for(events, CommandApplied, lambda e: e.command == "pause")
    trainer.submit(C.Pause())
    assert "already paused" in wait_for(events, CommandRefused).reason
    assert trainer.step == paused.step           # nothing trained while paused

    trainer.submit(C.SingleStep())
    one = wait_for(events, StepMetrics)
    assert one.step == paused.step
    trainer.submit(C.Pause())                    # a round trip: the loop is waiting again
    wait_for(events, CommandRefused)
    assert trainer.step == paused.step + 1       # exactly one step

    trainer.submit(C.Resume())
    wait_for(events, StepMetrics, lambda e: e.step > paused.step + 20)
    trainer.submit(C.Stop())
    finished = wait_for(events, RunFinished)
    st.close()
    assert finished.status == "interrupted"
    with open_run(st.run_dir) as r:
        info, steps = r.info(), r.steps()
        commands = [e["command"] for e in r.events("CommandApplied")]
    assert info.status == "interrupted"
    assert steps["step"] == list(range(trainer.step))   # every step recorded, none twice
    assert commands == ["pause", "single step", "resume", "stop"]


def test_single_step_while_running_is_refused(tmp_path):
    trainer, rec, _ = run_with(quick(tmp_path), [(3, C.SingleStep())])
    assert "pause first" in rec.of(CommandRefused)[0].reason


def test_same_seed_same_losses_on_cpu(tmp_path):
    cfg = quick(tmp_path, steps=25, model="cnn", layers=2, width=8, device="cpu")
    losses = [[e.loss for e in run_with(cfg, store=False)[1].of(StepMetrics)] for _ in range(2)]
    assert len(losses[0]) == 25 and losses[0] == losses[1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (cuDNN convolutions)")
def test_deterministic_gives_the_same_losses_on_cuda(tmp_path):
    """Without --deterministic, cuDNN may pick non-deterministic convolution kernels; with it,
    two runs of one seed agree exactly. Run in a fresh process: the setting is process-wide."""
    def losses():
        out = subprocess.run([sys.executable, "-m", "lsml_tui.tui.cli", "--headless", "--json",
                              "--no-progress", "--model", "cnn", "--device", "cuda", "--steps",
                              "40", "--deterministic", "--runs-dir", str(tmp_path / "runs")],
                             capture_output=True, text=True, check=True).stdout
        with open_run(json.loads(out)["run_dir"]) as r:
            return r.steps()["loss"]
    first, second = losses(), losses()
    assert len(first) == 40 and first == second


@pytest.mark.parametrize("late", [False, True], ids=["read-now", "read-late"])
def test_non_finite_loss_stops_as_diverged_and_keeps_the_last_finite_step(tmp_path, late):
    cfg = quick(tmp_path, optimizer="sgd", lr=1e6, clip=None, steps=200)
    trainer, rec, st = run_with(cfg, late=late)
    diverged, = rec.of(Diverged)
    assert trainer.status == "diverged" and trainer.step == diverged.step < cfg.steps
    assert "--lr" in diverged.message
    with open_run(st.run_dir) as r:
        info, steps = r.info(), r.steps()
    assert info.status == "diverged"
    assert steps["step"][-1] == diverged.step - 1
    assert all(map(torch.isfinite, torch.tensor(steps["loss"])))


@pytest.mark.parametrize("name", list(specs.OPTIMIZERS))
def test_every_optimizer_trains_and_rewinds_to_its_snapshot(tmp_path, name):
    """The real loop with each optimizer: snapshots every 10 steps (its state_dict), a rewind
    at step 25 back to step 20's weights and optimizer state, and the run finishes."""
    cfg = quick(tmp_path, optimizer=name, steps=30, snapshot_every=10)
    trainer, rec, _ = run_with(cfg, [(25, C.Rewind())], store=False)
    applied, = [e for e in rec.of(CommandApplied) if e.command == "rewind"]
    assert "rewound weights to step 20; optimizer state restored" in applied.detail
    assert trainer.status == "finished" and trainer.step == 30
