"""Data parallel with real torch.distributed processes: 2 gloo ranks on this machine.

Every test that starts ranks checks that none is left once it is done.
"""

import math
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch

from lsml_tui.trainer import commands as C
from lsml_tui.trainer.config import RunConfig
from lsml_tui.trainer.validate import resolve
from lsml_tui.trainer.parallel.world import data_seed
from lsml_tui.trainer.events import CommandApplied, RunFinished, StepMetrics
from lsml_tui.trainer.store.reader import list_runs, open_run
from lsml_tui.tui.bridge import TrainerBridge

from tests.conftest import alive, run_cli, run_json
from tests.test_trainer import quick, run_with

SMALL = ("--model", "mlp", "--layers", "1", "--width", "16", "--device", "cpu")


def descendants(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def none_alive(procs, timeout=30.0) -> bool:
    _, left = psutil.wait_procs(procs, timeout=timeout)
    left = alive(left)
    for p in left:                                  # leave nothing behind, then fail
        p.kill()
    return not left


INJECT = """
import os
import lsml_tui.trainer.loop as loop
train_step = loop.Trainer._train_step

def failing(self):  # an exception in one rank's step, as a bug or a bad batch would raise
    if os.environ.get("RANK") == os.environ["FAIL_RANK"] and self.step == 25:
        raise ValueError("injected on this rank")
    return train_step(self)

loop.Trainer._train_step = failing
"""


def dist_samples(run_dir):
    with open_run(run_dir) as r:
        return r.samples("DistSample")


def test_two_workers_learn_as_one_run_with_every_rank_measured(tmp_path):
    runs = tmp_path / "runs"
    out = run_json(*SMALL, "--workers", "2", "--steps", "200", "--sample-every", "20",
                   "--runs-dir", str(runs))
    assert out["status"] == "finished" and out["world_size"] == 2 and out["sync"] == "allreduce"
    assert out["final_train_loss"] < out["initial_train_loss"]
    assert out["global_batch"] == 2 * 128                       # --batch-size is per rank
    assert [r["rank"] for r in out["ranks"]] == [0, 1]
    for rank in out["ranks"]:
        assert rank["compute_s"] > 0 and rank["step_s"] >= rank["compute_s"]
        assert rank["comm_s"] >= 0 and rank["wait_s"] >= 0
    assert out["replicas_identical"] is True
    assert len(list_runs(runs)) == 1                            # one run, one store
    samples = dist_samples(out["run_dir"])
    assert len(samples) == 200 // 20                            # one per sampled step
    with open_run(out["run_dir"]) as r:
        flops = r.samples("FlopTable")[-1]
    # per replica, as one process: 2 * B * (32*16 + 16*10) forward, named as the model names
    assert flops["forward"] == 2 * 128 * (32 * 16 + 16 * 10)
    assert set(flops["per_module"]) == {"blocks.0.fc", "head"}
    # the 1x16 MLP on 32 inputs and 10 classes: (32*16 + 16) + (16*10 + 10) = 698 float32
    assert samples[-1]["payload_bytes"] == 4 * 698
    assert all(s["replicas_agree"] for s in samples)


def test_two_ranks_at_batch_b_give_the_losses_of_one_process_at_2b(tmp_path):
    """Mean loss, no batch norm: DDP's average of two B-example gradients is the gradient of
    the mean over the same 2B examples, so the runs agree step by step."""
    common = dict(model="mlp", layers=1, width=16, device="cpu", optimizer="sgd", clip=None,
                  steps=30, val_every=10**6, profile=False)
    two = run_json(*SMALL, "--optimizer", "sgd", "--clip", "off", "--steps", "30",
                   "--batch-size", "16", "--workers", "2", "--no-profile",
                   "--runs-dir", str(tmp_path / "two"))
    with open_run(two["run_dir"]) as r:
        distributed = r.steps()["loss"]

    def same_examples(trainer):         # rank 0's 16 examples, then rank 1's, every step
        gens = [torch.Generator().manual_seed(data_seed(0, rank)) for rank in (0, 1)]
        draw = trainer.task.batch

        def batch(split, size, gen):
            if split != "train":
                return draw(split, size, gen)
            parts = [draw(split, size // 2, g) for g in gens]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        trainer.task.batch = batch
    cfg = resolve(RunConfig(**common, batch_size=32, runs_dir=str(tmp_path / "one")))
    _, rec, _ = run_with(cfg, store=False, prepare=same_examples)
    single = [e.loss for e in rec.of(StepMetrics)]
    assert len(single) == len(distributed) == 30
    assert single == pytest.approx(distributed, rel=1e-5)
    assert distributed[-1] < distributed[0]


def test_torchrun_ranks_join_one_run(tmp_path):
    runs = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", "-m", "lsml_tui.tui.cli", "--headless",
                           "--json", "--no-progress", *SMALL, "--steps", "60",
                           "--runs-dir", str(runs)], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run, = list_runs(runs)                          # not two unrelated runs
    assert run.status == "finished" and run.steps == 60
    assert run.summary["world_size"] == 2 and run.summary["replicas_identical"] is True


def test_a_straggler_makes_the_other_rank_wait_for_it(tmp_path):
    out = run_json(*SMALL, "--workers", "2", "--straggle", "rank1:50ms", "--steps", "40",
                   "--sample-every", "8", "--runs-dir", str(tmp_path / "runs"))
    samples = dist_samples(out["run_dir"])
    assert len(samples) == 40 // 8
    for s in samples:
        fast, slow = s["ranks"]
        assert s["slowest"] == 1 and slow["delay_s"] == 0.05 and fast["delay_s"] == 0
        # rank 0 waits for rank 1's 50 ms (less whatever its own compute took longer)
        assert fast["wait_s"] > 0.03 and slow["wait_s"] < 0.01
        # the prediction: mean own compute + the fixed 50 ms (the max over ranks of the delays)
        own = (fast["compute_s"] + slow["compute_s"] - 0.05) / 2
        assert s["predicted_step_s"] == pytest.approx(own + 0.05)
    mean = {r["rank"]: r for r in out["ranks"]}
    assert mean[0]["wait_s"] > 0.03 > mean[1]["wait_s"]


def test_a_parameter_server_trains_and_its_link_carries_2_n_minus_1_gradients(tmp_path):
    out = run_json(*SMALL, "--workers", "2", "--sync", "ps", "--steps", "120",
                   "--sample-every", "20", "--runs-dir", str(tmp_path / "runs"))
    assert out["sync"] == "ps" and out["replicas_identical"] is True
    assert out["final_train_loss"] < out["initial_train_loss"]
    s = dist_samples(out["run_dir"])[-1]
    payload = 4 * 698                               # float32 gradients of the 1x16 MLP
    assert s["payload_bytes"] == payload
    assert s["busiest_link_bytes"] == 2 * (2 - 1) * payload     # rank 0: N-1 in, N-1 out
    assert s["wire_bytes_per_rank"] == 2 * payload              # a worker: M up, M down


# pp: rank 0 waits on a send from the killed stage, not in a collective
@pytest.mark.parametrize("mode", [(), ("--parallel", "pp", "--layers", "2")],
                         ids=["ddp", "pp"])
def test_a_killed_rank_fails_the_run_naming_it_and_leaves_no_process(tmp_path, mode):
    runs = tmp_path / "runs"
    proc = psutil.Popen([sys.executable, "-m", "lsml_tui.tui.cli", "--headless", "--no-progress",
                         *SMALL, *mode, "--workers", "2", "--steps", "1000000",
                         "--sample-every", "10", "--dist-timeout", "30", "--runs-dir", str(runs)],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    family, victim = [], None
    try:
        deadline = time.time() + 120
        while victim is None and time.time() < deadline:
            family = descendants(proc) or family
            samples = dist_samples(list_runs(runs)[0].run_dir) if list(runs.glob("*/run.sqlite")) \
                else []
            if len(samples) >= 2:                       # every rank names its pid
                victim = psutil.Process(samples[-1]["ranks"][1]["pid"])
            time.sleep(0.2)
        assert victim is not None and victim in family
        victim.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
        assert none_alive(family), "a rank outlived the run"
    assert proc.returncode == 1
    run, = list_runs(runs)
    assert run.status == "failed" and run.steps > 10
    with open_run(run.run_dir) as r:
        errors = [e["error"] for e in r.events("RunFailed")]
    assert any("rank 1" in e and "SIGKILL" in e for e in errors), errors
    assert b"rank 1" in err


def test_a_killed_launcher_takes_every_rank_down_with_the_run_recorded(tmp_path):
    """Ranks fork from a forkserver, not from the launcher: killed outright, the launcher
    must still end them (its end of the server's pipe closes, the server ends, and each
    rank gets the SIGINT torch asks the kernel for when a rank's parent dies)."""
    runs = tmp_path / "runs"
    proc = psutil.Popen([sys.executable, "-m", "lsml_tui.tui.cli", "--headless", "--no-progress",
                         *SMALL, "--workers", "2", "--steps", "1000000", "--runs-dir", str(runs)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    family = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (list_runs(runs) and list_runs(runs)[0].steps > 20):
            family = descendants(proc) or family
            time.sleep(0.2)
        family = descendants(proc)
        assert len(family) >= 3, family         # the forkserver and two ranks at least
        proc.kill()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        assert none_alive(family), "a rank or the forkserver outlived its launcher"
    run, = list_runs(runs)
    assert run.status == "interrupted" and run.steps > 20


@pytest.mark.parametrize("rank", ["0", "1"])
def test_an_exception_on_one_rank_fails_the_run_at_once_naming_that_rank(tmp_path, rank):
    """Not after --dist-timeout: the failed rank ends, the others see its connection close."""
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(INJECT)   # imported by every rank
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "inject"), "FAIL_RANK": rank}
    runs = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "lsml_tui.tui.cli", "--headless", "--no-progress",
                           *SMALL, "--workers", "2", "--steps", "1000000",
                           "--dist-timeout", "600", "--runs-dir", str(runs)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert f"rank {rank} failed (ValueError: injected on this rank)" in proc.stderr
    run, = list_runs(runs)
    assert run.status == "failed" and run.steps == 25       # steps 0-24 trained everywhere


def waiter(bridge, family: list, events: list):
    """wait(predicate, what): drain the bridge's events into `events`, keeping `family` (the
    bridge's process and its descendants) current, until `predicate()` holds."""
    def wait(predicate, what, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            family[:] = descendants(psutil.Process(bridge.process.pid)) or family
            events.extend(bridge.drain())
            if predicate():
                return
            time.sleep(0.05)
        pytest.fail(f"timed out waiting for {what}")
    return wait


def test_every_command_reaches_every_rank_and_the_replicas_stay_identical(tmp_path):
    """The dashboard's path: the bridge's process launches the ranks, rank 0 takes commands."""
    cfg = quick(tmp_path, workers=2, steps=10**6, sample_every=10, snapshot_every=20,
                device="cpu")
    bridge = TrainerBridge(cfg).start()
    family, events = [], []
    wait = waiter(bridge, family, events)

    def applied(name):
        return [e for e in events if isinstance(e, CommandApplied) and e.command == name]

    def last_step():
        return max((e.step for e in events if isinstance(e, StepMetrics)), default=-1)
    try:
        wait(lambda: last_step() > 30, "steps")
        plan = [C.SetOptimizer("momentum"), C.SetNorm("layer"), C.SetLR(0.01), C.SetClip(0.5),
                C.Pause(), C.SingleStep(), C.Resume(), C.Rewind()]
        for cmd in plan:
            bridge.send(cmd)
            name = C.describe(cmd)
            wait(lambda: applied(name), name)
        wait(lambda: last_step() > applied("rewind")[0].step + 30, "training after the rewind")
        last = bridge.stop(timeout=60)
        events.extend(last)
    finally:
        bridge.stop(timeout=5)
        assert none_alive([p for p in family if p.pid != os.getpid()]), "a rank was left"
    finished, = [e for e in events if isinstance(e, RunFinished)]
    assert finished.status == "interrupted"
    assert finished.summary["optimizer"] == "momentum" and finished.summary["norm"] == "layer"
    assert finished.summary["replicas_identical"] is True
    with open_run(finished.summary["run_dir"]) as r:
        steps = r.steps()
        samples = r.samples("DistSample")
    assert steps["step"] == list(range(len(steps["step"])))     # nothing lost, nothing twice
    assert samples and all(s["replicas_agree"] for s in samples)
    assert all(math.isfinite(v) for v in steps["loss"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_more_cuda_ranks_than_gpus_are_refused(tmp_path):
    n = torch.cuda.device_count() + 1
    for mode in (["--headless"], []):                  # headless, and before the dashboard
        proc = run_cli(*mode, "--device", "cuda", "--workers", str(n),
                       "--runs-dir", str(tmp_path / "runs"))
        assert proc.returncode == 2 and f"--workers {n}" in proc.stderr
        assert not (tmp_path / "runs").exists()
