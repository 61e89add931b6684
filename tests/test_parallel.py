"""Model parallelism on real torch.distributed ranks (gloo, 2 ranks): --parallel zero1 trains
as DDP does, with each rank holding its shard of the optimizer state."""

import os

import pytest

from lsml_tui.trainer import commands as C
from lsml_tui.trainer.events import CommandApplied, CommandRefused, RunFinished, StepMetrics
from lsml_tui.trainer.store.reader import open_run
from lsml_tui.tui.bridge import TrainerBridge
from tests.conftest import run_cli, run_json
from tests.test_distributed import SMALL, dist_samples, none_alive, waiter
from tests.test_trainer import quick


def losses(run_dir):
    with open_run(run_dir) as r:
        return r.steps()["loss"]


def test_zero1_trains_as_ddp_with_the_optimizer_state_split_across_ranks(tmp_path):
    common = (*SMALL, "--workers", "2", "--steps", "30", "--sample-every", "10")
    ddp = run_json(*common, "--parallel", "ddp", "--runs-dir", str(tmp_path / "ddp"))
    zero = run_json(*common, "--parallel", "zero1", "--runs-dir", str(tmp_path / "zero1"))
    # the same updates: ZeRO-1 only moves where each parameter's Adam state lives
    assert losses(zero["run_dir"]) == pytest.approx(losses(ddp["run_dir"]), rel=1e-6)
    assert zero["parallel"] == "zero1" and zero["replicas_identical"] is True
    whole = [r["optimizer_state_bytes"] for r in ddp["ranks"]]
    shards = [r["optimizer_state_bytes"] for r in zero["ranks"]]
    params = ddp["ranks"][0]["param_bytes"] // 4                    # fp32 weights
    # Adam keeps exp_avg and exp_avg_sq (2 x 4 bytes per parameter) and a 4-byte step per
    # tensor; the MLP with --layers 1 has 4 tensors (2 weights, 2 biases)
    assert whole == [8 * params + 4 * 4] * 2                       # ddp: a replica each
    assert sum(shards) == whole[0] and all(0 < s < whole[0] for s in shards)
    assert zero["optimizer_state_predicted"] == whole[0] / 2       # ZeRO: total / N
    assert ddp["optimizer_state_predicted"] == whole[0]
    # parameters and gradients stay whole on every rank under ZeRO-1
    assert [r["param_bytes"] for r in zero["ranks"]] == [4 * params] * 2
    assert [r["grad_bytes"] for r in zero["ranks"]] == [4 * params] * 2
    sample = dist_samples(zero["run_dir"])[-1]
    assert sample["parallel"] == "zero1"
    assert [r["optimizer_state_bytes"] for r in sample["ranks"]] == shards


def test_zero1_needs_ranks_and_an_optimizer_it_can_shard():
    one = run_cli("--headless", *SMALL, "--parallel", "zero1")
    assert one.returncode == 2 and "needs --workers 2 or more" in one.stderr
    muon = run_cli("--headless", *SMALL, "--parallel", "zero1", "--workers", "2",
                   "--optimizer", "muon")
    assert muon.returncode == 2 and "--optimizer muon" in muon.stderr and "adamw" in muon.stderr
    bad = run_cli("--headless", *SMALL, "--parallel", "zero3", "--workers", "2")
    assert bad.returncode == 2 and "'zero3' is not one of: ddp, zero1" in bad.stderr


def test_zero1_takes_the_lr_on_every_rank_and_refuses_an_optimizer_switch(tmp_path):
    cfg = quick(tmp_path, workers=2, steps=10**6, sample_every=10, device="cpu",
                parallel="zero1")
    bridge = TrainerBridge(cfg).start()
    family, events = [], []
    wait = waiter(bridge, family, events)
    try:
        wait(lambda: any(isinstance(e, StepMetrics) and e.step > 20 for e in events), "steps")
        bridge.send(C.SetOptimizer("momentum"))
        wait(lambda: any(isinstance(e, CommandRefused) for e in events), "the refusal")
        bridge.send(C.SetLR(0.01))
        wait(lambda: any(isinstance(e, CommandApplied) for e in events), "the lr")
        applied = next(e for e in events if isinstance(e, CommandApplied))
        wait(lambda: any(isinstance(e, StepMetrics) and e.step > applied.step + 20
                         for e in events), "steps after the lr")
        events.extend(bridge.stop(timeout=60))
    finally:
        bridge.stop(timeout=5)
        assert none_alive([p for p in family if p.pid != os.getpid()]), "a rank was left"
    refused = next(e for e in events if isinstance(e, CommandRefused))
    assert "shards the optimizer state" in refused.reason
    after = [e.lr for e in events if isinstance(e, StepMetrics) and e.step >= applied.step]
    assert after and set(after) == {0.01}
    finished, = [e for e in events if isinstance(e, RunFinished)]
    assert finished.summary["replicas_identical"] is True      # every rank took the lr
