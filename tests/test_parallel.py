"""Model parallelism on real torch.distributed ranks (gloo, 2 ranks): --parallel zero1 trains
as DDP does, with each rank holding its shard of the optimizer state; fsdp trains as one
process at the global batch with parameters, gradients and optimizer state split; the
commands reach every rank under every mode; a comparison report; torchrun; lr-find.
tp and pp: test_split_model.py."""

import json
import os

import pytest
import torch

from lsml_tui.trainer import commands as C
from lsml_tui.trainer.config import RunConfig
from lsml_tui.trainer.events import (CommandApplied, CommandRefused, RunFinished, StepMetrics,
                                     TraceCaptured)
from lsml_tui.trainer.parallel.world import data_seed
from lsml_tui.trainer.specs import PARALLEL, SPLITS
from lsml_tui.trainer.store.reader import open_run
from lsml_tui.trainer.validate import resolve
from lsml_tui.tui.bridge import TrainerBridge
from lsml_tui.tui.format import nbytes
from tests.conftest import run_cli, run_json
from tests.test_distributed import SMALL, dist_samples, none_alive, waiter
from tests.test_trainer import quick, run_with


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
    # bytes sent a step: DDP's ring all-reduce of M = 4 x 698 gradient bytes, 2(2-1)/2 x M
    m = 4 * params
    assert [r["comm_bytes"] for r in ddp["ranks"]] == [m] * 2 and ddp["comm_predicted"] == [m] * 2
    # ZeRO-1 as torch builds it: that all-reduce, then each rank broadcasts what it updated
    # to the other, (2-1) x its share: M in all, uneven like the shards
    assert [r["collectives"]["all_reduce"]["bytes"] for r in zero["ranks"]] == [m] * 2
    assert sum(r["collectives"]["broadcast"]["bytes"] for r in zero["ranks"]) == m
    assert zero["comm_predicted"] == [3 * m / 2] * 2                # 3(N-1)/N x M


def test_zero1_needs_ranks_and_an_optimizer_it_can_shard():
    one = run_cli("--headless", *SMALL, "--parallel", "zero1")
    assert one.returncode == 2 and "needs --workers 2 or more" in one.stderr
    muon = run_cli("--headless", *SMALL, "--parallel", "zero1", "--workers", "2",
                   "--optimizer", "muon")
    assert muon.returncode == 2 and "--optimizer muon" in muon.stderr and "adamw" in muon.stderr
    bad = run_cli("--headless", *SMALL, "--parallel", "zero3", "--workers", "2")
    assert bad.returncode == 2 and f"'zero3' is not one of: {', '.join(PARALLEL)}" in bad.stderr


@pytest.mark.parametrize("mode", ["zero1", "fsdp", "tp", "pp"])
def test_commands_reach_every_rank_and_switches_are_refused_with_the_reason(tmp_path, mode):
    cfg = quick(tmp_path, workers=2, steps=10**6, sample_every=10, snapshot_every=10,
                device="cpu", parallel=mode, layers=2 if mode == "pp" else 1)   # 2 stages
    bridge = TrainerBridge(cfg).start()
    family, events = [], []
    wait = waiter(bridge, family, events)

    def answered(cmd):
        name = C.describe(cmd)
        return [e for e in events if isinstance(e, (CommandApplied, CommandRefused))
                and e.command == name]
    try:
        wait(lambda: any(isinstance(e, StepMetrics) and e.step > 20 for e in events), "steps")
        plan = [C.SetOptimizer("momentum"), C.SetNorm("layer"), C.SetLR(0.01), C.SetClip(0.5),
                C.Pause(), C.SingleStep(), C.Resume(), C.Rewind(), C.CaptureTrace(2)]
        for cmd in plan:
            bridge.send(cmd)
            wait(lambda: answered(cmd), C.describe(cmd))
        wait(lambda: any(isinstance(e, TraceCaptured) for e in events), "the trace")
        rewound = answered(C.Rewind())[0]
        wait(lambda: any(isinstance(e, StepMetrics) and e.step > rewound.step + 10
                         for e in events), "steps after the rewind")
        events.extend(bridge.stop(timeout=60))
    finally:
        bridge.stop(timeout=5)
        assert none_alive([p for p in family if p.pid != os.getpid()]), "a rank was left"
    refused = [e for e in events if isinstance(e, CommandRefused)]
    assert [e.command for e in refused] == [C.describe(plan[0]), C.describe(plan[1])]
    assert all(f"--parallel {mode} {SPLITS[mode]} across ranks" in e.reason for e in refused)
    applied = [e for e in events if isinstance(e, CommandApplied)]
    assert [e.command for e in applied] == [C.describe(c) for c in plan[2:]] + ["stop"]
    after = [e.lr for e in events if isinstance(e, StepMetrics) and e.step >= applied[0].step]
    assert after and set(after) == {0.01}
    finished, = [e for e in events if isinstance(e, RunFinished)]
    assert finished.status == "interrupted"
    with open_run(finished.summary["run_dir"]) as r:
        steps = r.steps()
    assert steps["step"] == list(range(len(steps["step"])))     # nothing lost, nothing twice
    trace, = [e for e in events if isinstance(e, TraceCaptured)]     # rank 0's profile
    assert trace.steps == 2 and os.path.getsize(trace.path) > 0


# an MLP whose hidden width is odd, so FSDP's dim-0 shards are uneven (padding shows)
ODD = ("--model", "mlp", "--layers", "2", "--width", "15", "--device", "cpu")
# its tensors' shapes (out, in): 32 inputs, 15 hidden twice, 10 classes
SHAPES = [(15, 32), (15,), (15, 15), (15,), (10, 15), (10,)]


def one_process_losses(tmp_path, steps: int, batch: int, ranks: int = 2, **overrides):
    """One process at `ranks` x `batch` examples a step: rank 0's batch, then rank 1's, as
    the ranks of a data-parallel run draw them."""
    def same_examples(trainer):
        gens = [torch.Generator().manual_seed(data_seed(0, r)) for r in range(ranks)]
        draw = trainer.task.batch

        def batch_of(split, size, gen):
            if split != "train":
                return draw(split, size, gen)
            parts = [draw(split, size // ranks, g) for g in gens]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        trainer.task.batch = batch_of
    cfg = resolve(RunConfig(model="mlp", layers=2, width=15, device="cpu", steps=steps,
                            val_every=10**6, profile=False, batch_size=ranks * batch,
                            runs_dir=str(tmp_path / "one"), **overrides))
    _, rec, _ = run_with(cfg, store=False, prepare=same_examples)
    return [e.loss for e in rec.of(StepMetrics)]


def rows(shape, rank: int, n: int = 2) -> int:
    """Elements rank `rank` holds of a tensor FSDP shards on dim 0 (torch.chunk's split:
    ceil(d0 / n) rows to each rank in turn, the last ones fewer)."""
    per = -(-shape[0] // n)
    mine = max(0, min(per, shape[0] - rank * per))
    return mine * (shape[1] if len(shape) > 1 else 1)


@pytest.mark.parametrize("reshard", ["--reshard-after-forward", "--no-reshard-after-forward"])
def test_fsdp_trains_as_one_process_at_the_global_batch_with_every_kind_sharded(tmp_path,
                                                                                 reshard):
    out = run_json(*ODD, "--workers", "2", "--parallel", "fsdp", reshard, "--steps", "20",
                   "--batch-size", "16", "--clip", "0.1", "--sample-every", "10",
                   "--runs-dir", str(tmp_path / "fsdp"))
    assert out["status"] == "finished" and out["parallel"] == "fsdp"
    assert out["clip_events"] > 0               # the global norm, over both shards, clips
    single = one_process_losses(tmp_path, 20, 16, clip=0.1)
    assert losses(out["run_dir"]) == pytest.approx(single, rel=1e-5)
    total = sum(rows(s, 0, 1) for s in SHAPES)
    # 32*15+15 + 15*15+15 + 15*10+10 = 895 parameters
    assert total == 895 and out["params"] == total
    held = [sum(rows(s, r) for s in SHAPES) for r in (0, 1)]
    # rank 0: 8*32+8 + 8*15+8 + 5*15+5 = 472; rank 1: 7*32+7 + 7*15+7 + 5*15+5 = 423:
    # total / 2 = 447.5 within the padding, one row of each odd tensor (32+1+15+1 = 49)
    assert held == [472, 423] and all(abs(h - total / 2) <= 49 / 2 for h in held)
    ranks = out["ranks"]
    assert [r["param_bytes"] for r in ranks] == [4 * h for h in held]          # fp32
    assert [r["grad_bytes"] for r in ranks] == [4 * h for h in held]
    # Adam: exp_avg and exp_avg_sq of each shard (2 x 4 bytes) and a 4-byte step per tensor
    assert [r["optimizer_state_bytes"] for r in ranks] == [8 * h + 4 * 6 for h in held]
    assert out["replicas_identical"] is None        # no rank holds a replica to compare
    # an all-gather of the parameters for forward, again for backward when resharded, and a
    # reduce-scatter of the gradients: (N-1)/N x M each, M = 4 x 895 = 3580 bytes
    passes = 3 if reshard == "--reshard-after-forward" else 2
    assert out["comm_predicted"] == [passes * 3580 / 2] * 2         # 1.5x or 1x DDP's M
    # measured: FSDP pads every shard to ceil(rows / 2), rank 0's size, 472 parameters, so
    # each pass moves (2-1) x 4 x 472 = 1888 bytes a rank, not 1790
    for r in ranks:
        assert r["comm_bytes"] == passes * 1888
        assert r["collectives"]["reduce_scatter"]["bytes"] == 1888


def test_fsdp_refuses_what_it_cannot_shard():
    ddp = run_cli("--headless", *SMALL, "--workers", "2", "--no-reshard-after-forward")
    assert ddp.returncode == 2 and "applies to --parallel fsdp" in ddp.stderr
    muon = run_cli("--headless", *SMALL, "--parallel", "fsdp", "--workers", "2",
                   "--optimizer", "muon")
    assert muon.returncode == 2 and "--optimizer muon" in muon.stderr
    fp16 = run_cli("--headless", *SMALL, "--parallel", "fsdp", "--workers", "2",
                   "--precision", "fp16")
    assert fp16.returncode == 2 and "use bf16 or fp32" in fp16.stderr


def test_a_comparison_report_puts_each_modes_ranks_beside_their_formulas(tmp_path):
    from lsml_tui.tui.report import write_reports
    runs = tmp_path / "runs"
    outs = {mode: run_json("--model", "mlp", "--layers", "2", "--width", "16", "--device", "cpu",
                           "--workers", "2", "--parallel", mode, "--steps", "8",
                           "--sample-every", "4", "--runs-dir", str(runs))
            for mode in ("ddp", "fsdp", "pp")}
    paths = write_reports([o["run_dir"] for o in outs.values()], ["json", "md", "html"], tmp_path)
    report = json.loads(next(p for p in paths if p.suffix == ".json").read_text())
    for run, (mode, out) in zip(report["runs"], outs.items()):
        held = run["distributed"]["held"]
        assert run["distributed"]["parallel"] == mode
        # what the report says each rank held and sent is what the run's summary said
        assert [r["param_bytes"] for r in held["ranks"]] == [r["param_bytes"] for r in out["ranks"]]
        assert [r["comm_bytes"] for r in held["ranks"]] == [r["comm_bytes"] for r in out["ranks"]]
        assert [r["comm_predicted"] for r in held["ranks"]] == out["comm_predicted"]
    # 970 parameters, 4 bytes each: a whole replica under ddp, half of it under fsdp
    assert report["runs"][0]["distributed"]["held"]["param_predicted"] == 4 * 970
    assert report["runs"][1]["distributed"]["held"]["param_predicted"] == 4 * 970 / 2
    markdown = next(p for p in paths if p.suffix == ".md").read_text()
    assert markdown.count("# Per rank: memory, communication, bubble") == 3
    assert "(p-1)/(m+p-1) = 20.0%" in markdown            # pp, 4 microbatches on 2 stages
    assert "| parallel | ddp | fsdp | pp |" in markdown    # the comparison, side by side
    # the largest rank holds params + grads + Adam's two moments: 4 x (1 + 1 + 2) bytes a
    # parameter plus a 4-byte step per tensor; ddp: 970 parameters in 6 tensors
    assert f"| held per rank, largest | {nbytes(16 * 970 + 4 * 6)} |" in markdown
    html = next(p for p in paths if p.suffix == ".html").read_text()
    assert '<figure aria-label="Memory per rank"><svg' in html


def test_torchrun_ranks_run_a_pipeline_as_one_run(tmp_path):
    import subprocess
    import sys
    from lsml_tui.trainer.store.reader import list_runs
    runs = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", "-m", "lsml_tui.tui.cli", "--headless",
                           "--json", "--no-progress", "--model", "mlp", "--layers", "2",
                           "--width", "16", "--device", "cpu", "--parallel", "pp",
                           "--steps", "10", "--runs-dir", str(runs)],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run, = list_runs(runs)                          # rank 0 records, the one run
    assert run.status == "finished" and run.steps == 10
    assert run.summary["parallel"] == "pp" and run.summary["world_size"] == 2


def test_lr_find_ramps_one_process_at_each_modes_global_batch():
    from lsml_tui.trainer.tuning.lr_find import ramp_config
    for mode, batch in (("fsdp", 2 * 16), ("tp", 16), ("pp", 16)):   # data parallel: N x B
        cfg = resolve(RunConfig(model="mlp", layers=2, width=16, workers=2, device="cpu",
                                batch_size=16, parallel=mode))
        ramp = ramp_config(cfg, 10)
        assert (ramp.workers, ramp.parallel, ramp.batch_size) == (1, "ddp", batch)
        assert resolve(ramp).microbatches is None       # a valid one-process config
