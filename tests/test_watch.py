"""``lsml_tui.watch`` on a plain PyTorch loop: what it records, measures and takes.

Every number is the loop's own (the losses it computed, the norms clip_grad_norm_
returned) or arithmetic written beside it; the store is the real one.
"""

import math
import subprocess
import sys
import textwrap
import threading

import pytest
import torch
from torch import nn

import lsml_tui
from lsml_tui.trainer import commands as C
from lsml_tui.trainer.events import CommandApplied, CommandRefused, Notice, RunFinished
from lsml_tui.trainer.store.inbox import send_command
from lsml_tui.trainer.store.reader import list_runs, open_run
from lsml_tui.trainer.watch.run import WatchedRun
from lsml_tui.tui.report import write_reports
from lsml_tui.tui.replay import recorded_events
from tests.test_report_tensorboard import read, series

B, D, H, K = 32, 8, 16, 2           # batch, input width, hidden width, classes


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, K))


def data(n=256):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, D, generator=g)
    return x, (x[:, 0] > 0).long()


def train(run, model, opt, steps, clip=None, accumulate=1, validate_every=0, after=None):
    """A plain loop; returns the losses it computed (one per optimizer step) and the norms
    clip_grad_norm_ returned."""
    x, y = data()
    losses, norms = [], []
    for step in range(steps):
        opt.zero_grad()
        total = 0.0
        for m in range(accumulate):
            i = torch.arange(B) + (step * accumulate + m) * B % (len(x) - B)
            loss = nn.functional.cross_entropy(model(x[i]), y[i]) / accumulate
            loss.backward()
            total += loss.item()
        if clip is not None:
            norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), clip).item())
        opt.step()
        run.log(loss=total)
        losses.append(total)
        if validate_every and step % validate_every == 0:
            model.eval()
            with torch.no_grad():
                run.log(val_loss=nn.functional.cross_entropy(model(x), y))
            model.train()
        if after:
            after(step)
        if run.should_stop:
            break
    return losses, norms


def test_each_optimizer_step_is_a_recorded_step_with_the_loops_loss_and_clips(tmp_path):
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    run = lsml_tui.watch(model, opt, runs_dir=tmp_path, sample_every=10)
    losses, norms = train(run, model, opt, steps=25, clip=0.3)
    summary = run.finish()
    with open_run(run.run_dir) as r:
        steps, clips, info = r.steps(), r.clips(), r.info()
    assert info.status == summary["status"] == "finished"
    assert steps["step"] == list(range(25))
    assert steps["loss"] == pytest.approx(losses, rel=1e-6)
    assert steps["lr"] == [0.5] * 25
    assert steps["grad_norm"] == pytest.approx(norms, rel=1e-5)    # the norm before clipping
    clipped = [i for i, n in enumerate(norms) if n > 0.3]
    assert clips["step"] == clipped and summary["clip_events"] == len(clipped) > 0
    assert clips["scale"] == pytest.approx([0.3 / (norms[i] + 1e-6) for i in clipped])
    # B rows a step, over the step's time
    assert all(e > 0 for e in steps["examples_per_second"])


def test_flops_and_saved_activations_per_module_are_the_arithmetic(tmp_path):
    model = net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    run = lsml_tui.watch(model, opt, runs_dir=tmp_path, sample_every=5)
    train(run, model, opt, steps=6, validate_every=1)        # eval forwards are not counted
    run.finish()
    with open_run(run.run_dir) as r:
        flops, layers = r.samples("FlopTable"), r.samples("LayerStats")
        memory = r.samples("MemorySample")
    # forward: 2*B*D*H = 2*32*8*16 = 8192 (layer 0), 2*B*H*K = 2*32*16*2 = 2048 (layer 2)
    # backward: layer 0 only its weight gradient (the input needs none): 8192;
    #           layer 2 weight and input gradients: 2 * 2048 = 4096
    assert [f["step"] for f in flops] == [0]                 # once: the shape never changes
    assert flops[0]["per_module"] == {"0": [8192, 8192], "2": [2048, 4096]}
    assert (flops[0]["forward"], flops[0]["backward"]) == (8192 + 2048, 8192 + 4096)
    assert flops[0]["input_shape"] == [B, D]
    assert [s["step"] for s in layers] == [0, 5]
    # saved for backward: the input of layer 0, B*D*4 = 1024 bytes; the ReLU's output
    # (layer 2 saves the same storage as its input), B*H*4 = 2048 bytes
    assert layers[0]["saved_bytes"] == {"0": 1024, "1": 2048}
    assert layers[0]["names"] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    # parameters: (8*16 + 16 + 16*2 + 2) * 4 = 178 * 4 = 712 bytes; Adam keeps two of each
    assert memory[0]["param_bytes"] == memory[0]["grad_bytes"] == 712
    assert memory[0]["optimizer_state_bytes"] >= 2 * 712


def test_gradient_accumulation_is_one_step_per_update_and_counts_every_micro_batch(tmp_path):
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = lsml_tui.watch(model, opt, runs_dir=tmp_path)
    losses, _ = train(run, model, opt, steps=3, accumulate=4)
    run.finish()
    with open_run(run.run_dir) as r:
        steps, flops = r.steps(), r.samples("FlopTable")[0]
    assert steps["step"] == [0, 1, 2] and steps["loss"] == pytest.approx(losses, rel=1e-6)
    # four micro-batches of the step above: 4 * 10240 forward, 4 * 12288 backward
    assert (flops["forward"], flops["backward"]) == (4 * 10240, 4 * 12288)


def test_bad_arguments_raise_one_line_before_anything_is_written(tmp_path):
    model, runs = net(), tmp_path / "runs"
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    other = torch.optim.SGD(net().parameters(), lr=0.1)
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    cases = [((object(), opt), {}, TypeError, "torch.nn.Module"),
             ((model, "sgd"), {}, TypeError, "torch.optim.Optimizer"),
             ((model, other), {}, ValueError, "holds none of Sequential's parameters"),
             ((model, opt), {"sample_every": 0}, ValueError, "sample_every=0"),
             ((model, opt), {"runs_dir": blocked / "runs"}, ValueError, "a-file")]
    for args, kw, error, text in cases:
        with pytest.raises(error, match=text) as caught:
            lsml_tui.watch(*args, **{"runs_dir": runs, **kw})
        assert "\n" not in str(caught.value)
    assert not runs.exists()
    assert torch.nn.utils.clip_grad_norm_.__module__ == "torch.nn.utils.clip_grad"


def test_commands_reach_the_loop_lr_pause_step_stop_and_refusals(tmp_path):
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    events = []
    run = WatchedRun(model, opt, runs_dir=tmp_path, sink=events.extend)
    user_lrs = []

    def after(step):
        user_lrs.append(opt.param_groups[0]["lr"])
        if step == 0:
            run.submit(C.CaptureTrace(steps=2))     # steps 1 and 2, into the run directory
        if step == 2:
            run.submit(C.SetLR(0.4))
            run.submit(C.SetOptimizer("adam"))
            run.submit(C.Pause())
            # the loop now waits in step 3's hook: another thread steps it once, then stops it
            threading.Timer(0.3, run.submit, [C.SingleStep()]).start()
            threading.Timer(0.9, run.submit, [C.Stop()]).start()
    train(run, model, opt, steps=50, after=after)
    run.finish()
    with open_run(run.run_dir) as r:
        steps, info = r.steps(), r.info()
    # steps 0-2 at the user's 0.1; from step 3 the dashboard's 0.4 (a factor of 4 on every
    # group), while the user's own lr stays 0.1 between steps
    assert steps["lr"][:3] == [0.1] * 3 and set(steps["lr"][3:]) == {0.4}
    assert set(user_lrs) == {0.1}
    # paused before step 3; one single step (3); stopped before step 4, which still updates
    assert steps["step"] == list(range(5)) and info.status == "interrupted"
    applied = [e.command for e in events if isinstance(e, CommandApplied)]
    assert applied == ["trace 2 steps", "lr 0.4", "pause", "single step", "stop"]
    assert (run.run_dir / "trace-step1.json").stat().st_size > 0
    refused = [e for e in events if isinstance(e, CommandRefused)]
    assert len(refused) == 1 and "your script builds its optimizer" in refused[0].reason


def test_a_dashboard_commands_a_watched_run_through_its_store(tmp_path):
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run = lsml_tui.watch(model, opt, runs_dir=tmp_path)

    def after(step):
        if step == 0:
            send_command(run.run_dir, C.Stop())     # what lsml-tui open's q-less stop does
        if step < 200:
            import time
            time.sleep(0.01)
    train(run, model, opt, steps=400, after=after)
    run.finish()
    with open_run(run.run_dir) as r:
        assert r.info().status == "interrupted" and r.info().summary["steps"] < 400


def test_an_exception_fails_the_run_and_ctrl_c_interrupts_it(tmp_path):
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError):
        with lsml_tui.watch(model, opt, runs_dir=tmp_path / "a") as run:
            train(run, model, opt, steps=3)
            raise RuntimeError("out of data")
    with open_run(run.run_dir) as r:
        info, failed = r.info(), r.events("RunFailed")
    assert info.status == "failed" and info.summary["steps"] == 3
    assert failed[0]["error"] == "RuntimeError: out of data"
    with pytest.raises(KeyboardInterrupt):
        with lsml_tui.watch(model, opt, runs_dir=tmp_path / "b") as run:
            raise KeyboardInterrupt
    with open_run(run.run_dir) as r:
        assert r.info().status == "interrupted"


def test_a_script_that_never_calls_finish_is_recorded_when_it_ends(tmp_path):
    script = tmp_path / "plain.py"
    script.write_text(textwrap.dedent(f"""
        import torch, lsml_tui
        model = torch.nn.Linear(4, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        run = lsml_tui.watch(model, opt, runs_dir={str(tmp_path / 'runs')!r})
        for _ in range(7):
            loss = model(torch.randn(8, 4)).pow(2).mean()
            opt.zero_grad(); loss.backward(); opt.step(); run.log(loss=loss)
        if {'fail'!r} in __import__('sys').argv:
            raise ValueError("bad batch")
    """))
    ok = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    bad = subprocess.run([sys.executable, str(script), "fail"], capture_output=True, text=True)
    assert ok.returncode == 0 and bad.returncode == 1 and "bad batch" in bad.stderr
    runs = sorted(list_runs(tmp_path / "runs"), key=lambda r: r.created)
    assert [(r.status, r.steps) for r in runs] == [("finished", 7), ("failed", 7)]


def test_a_watched_run_reads_like_a_built_in_one(tmp_path):
    model = net()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    run = lsml_tui.watch(model, opt, runs_dir=tmp_path, sample_every=4, name="tiny",
                         config={"batch": B})
    train(run, model, opt, steps=9, clip=0.2, validate_every=4,
          after=lambda step: run.log(accuracy=0.5 + step / 100))
    run.finish()
    (info,) = list_runs(tmp_path)
    assert (info.model, info.optimizer, info.steps) == ("tiny", "adamw", 9)
    assert info.config["user"] == {"batch": B} and info.config["source"] == "watch"
    paths = write_reports([run.run_dir], ["html", "md", "json", "csv", "tensorboard"])
    names = {p.name for p in paths}
    tensorboard = {n for n in names if n.startswith("events.out.tfevents.")}
    assert names - tensorboard == {f"report.{ext}" for ext in ("html", "md", "json", "csv")}
    assert len(tensorboard) == 1
    kinds = {type(e).__name__ for e in recorded_events(run.run_dir)}
    assert {"RunStarted", "StepMetrics", "ValMetrics", "ClipEvent", "FlopTable", "LayerStats",
            "MemorySample", "TimingSample", "Logged", "RunFinished"} <= kinds
    with open_run(run.run_dir) as r:
        logged = r.samples("Logged")
    assert [s["values"]["accuracy"] for s in logged] == pytest.approx(
        [0.5 + s / 100 for s in range(9)])
    board = read(next(p for p in paths if p.name in tensorboard))
    assert series(board, "logged/accuracy") == pytest.approx(
        {s: 0.5 + s / 100 for s in range(9)})


def test_a_compiled_model_records_steps_and_says_what_it_cannot_measure(tmp_path):
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    fast = torch.compile(model, backend="eager")
    events = []
    run = WatchedRun(fast, opt, runs_dir=tmp_path, sink=events.extend)
    losses, _ = train(run, fast, opt, steps=4)
    run.finish()
    with open_run(run.run_dir) as r:
        assert r.steps()["loss"] == pytest.approx(losses, rel=1e-6)
        assert r.samples("FlopTable") == []
    notes = [e.message for e in events if isinstance(e, Notice)]
    assert any("compiled" in n for n in notes)
    assert [e.status for e in events if isinstance(e, RunFinished)] == ["finished"]
    assert math.isfinite(losses[-1])


DDP_SCRIPT = """
import os, sys, time, torch, torch.distributed as dist, lsml_tui
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.set_num_threads(1)
torch.manual_seed(0)
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
run = lsml_tui.watch(model, opt, runs_dir=sys.argv[1], sample_every=5)
g = torch.Generator().manual_seed(rank)
for step in range(int(sys.argv[2])):
    if rank == 1:
        time.sleep(0.03)                # a straggler: slow data on rank 1
    x = torch.randn(8, 4, generator=g)
    loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
    run.log(loss=loss)
    if step == 7 and rank == 0 and len(sys.argv) > 3:
        run.submit(__import__("lsml_tui.trainer.commands", fromlist=["Stop"]).Stop())
    if run.should_stop:
        break
run.finish()
print(rank, run.step, flush=True)
dist.destroy_process_group()
"""


@pytest.mark.parametrize("stop", [False, True])
def test_a_users_ddp_script_under_torchrun_is_recorded_by_rank_0(tmp_path, stop):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    args = [str(tmp_path / "runs"), "20"] + (["stop"] if stop else [])
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", str(script), *args],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (info,) = list_runs(tmp_path / "runs")                  # rank 0's only
    # stopped: asked after step 7, applied on every rank at the exchange after step 9 (every
    # 5 steps), so both ranks took 10 steps
    steps = 10 if stop else 20
    assert sorted(proc.stdout.split()) == sorted(["0", str(steps), "1", str(steps)])
    assert (info.status, info.steps) == ("interrupted" if stop else "finished", steps)
    with open_run(info.run_dir) as r:
        logged = [s["values"] for s in r.samples("Logged")]
        notices = [e["message"] for e in r.events("Notice")]
    assert len(logged) == steps // 5 and set(logged[0]) == {
        "rank_step_s/0", "rank_step_s/1", "rank_data_forward_s/0", "rank_data_forward_s/1"}
    # rank 1 sleeps 30 ms before its forward: its data-and-forward time is the longer
    assert all(v["rank_data_forward_s/1"] > v["rank_data_forward_s/0"] + 0.02 for v in logged)
    assert any("rank 1 is the straggler" in n for n in notices)
    # the data-parallel panel's samples: rank 1's data and forward is the slowest, rank 0
    # waits for it; the replicas' weights agree
    with open_run(info.run_dir) as r:
        samples, config = r.samples("DistSample"), r.info().config
    assert (config["workers"], config["sync"]) == (2, "watch") and len(samples) == steps // 5
    for s, v in zip(samples, logged):
        assert s["slowest"] == 1 and s["replicas_agree"] is True and s["global_batch"] == 16
        r0, r1 = s["ranks"]
        assert (r0["compute_s"], r1["compute_s"]) == (v["rank_data_forward_s/0"],
                                                      v["rank_data_forward_s/1"])
        assert r0["wait_s"] == pytest.approx(r1["compute_s"] - r0["compute_s"])
        assert r1["wait_s"] == 0.0
