"""Model parallelism that splits the model itself, on real torch.distributed ranks (gloo,
2 ranks): --parallel tp (each rank half of every split layer) and pp (each rank a stage of
blocks), each training as one process does at the same batch, each rank's bytes and the
pipeline's bubble against their formulas, and what each refuses."""

import pytest

from lsml_tui.trainer.config import RunConfig
from lsml_tui.trainer.events import StepMetrics
from lsml_tui.trainer.validate import resolve
from tests.conftest import run_cli, run_json
from tests.test_distributed import SMALL
from tests.test_parallel import losses
from tests.test_trainer import run_with


def one_process(tmp_path, flags, steps: int) -> tuple[list[float], float]:
    """The losses and last validation loss of one process with the run flags `flags`."""
    values = {k.lstrip("-").replace("-", "_"): v for k, v in zip(flags[::2], flags[1::2])}
    cfg = resolve(RunConfig(**{k: v if k == "model" else int(v) for k, v in values.items()},
                            device="cpu", steps=steps, runs_dir=str(tmp_path / "one")))
    trainer, rec, _ = run_with(cfg, store=False)
    return [e.loss for e in rec.of(StepMetrics)], trainer.last_val_loss


# (flags, Linear layers tp splits: (rows, cols, bias split) as nn.Linear stores them)
D = 16                  # d_model / width of the tp runs
TP = {
    # per block: qkv (3D, D) and fc (4D, D) column-parallel, weight and bias split; attn.proj
    # (D, D) and mlp.proj (D, 4D) row-parallel, weight split, bias whole
    "transformer": (("--model", "transformer", "--layers", "2", "--width", str(D), "--heads",
                     "2", "--seq-len", "16", "--batch-size", "8"),
                    2 * [(3 * D, D, True), (D, D, False), (4 * D, D, True), (D, 4 * D, False)]),
    # column, row, column, then the head row-parallel (3 hidden layers: an odd one out)
    "mlp": (("--model", "mlp", "--layers", "3", "--width", str(D)),
            [(D, 32, True), (D, D, False), (D, D, True), (10, D, False)]),
}


@pytest.mark.parametrize("family", list(TP))
def test_tp_trains_as_one_process_with_its_split_layers_half_size(tmp_path, family):
    flags, split = TP[family]
    out = run_json(*flags, "--device", "cpu", "--workers", "2", "--parallel", "tp",
                   "--steps", "15", "--sample-every", "5", "--runs-dir", str(tmp_path / "tp"))
    assert out["status"] == "finished" and out["parallel"] == "tp"
    # every rank the same batch: --batch-size 8, the MLP's default 128
    assert out["global_batch"] == {"transformer": 8, "mlp": 128}[family]
    # every rank sees the batch one process would: the same losses, step by step
    assert losses(out["run_dir"]) == pytest.approx(one_process(tmp_path, flags, 15)[0],
                                                   rel=1e-5)
    # each rank holds half of every split tensor and the rest whole
    halved = sum(rows * cols + (rows if bias else 0) for rows, cols, bias in split) // 2
    # transformer: 2 x ((3*16*16 + 48) + 16*16 + (4*16*16 + 64) + 16*64) / 2 = 3184;
    # mlp: ((16*32 + 16) + 16*16 + (16*16 + 16) + 10*16) / 2 = 608
    assert halved == {"transformer": 3184, "mlp": 608}[family]
    total = out["params"]
    assert [r["param_bytes"] for r in out["ranks"]] == [4 * (total - halved)] * 2
    assert [r["grad_bytes"] for r in out["ranks"]] == [4 * (total - halved)] * 2
    assert out["replicas_identical"] is True        # the whole layers agree on both ranks
    # Megatron: each row-parallel layer all-reduces its output in forward, each column-
    # parallel one its input's gradient in backward (not the MLP's first, fed by the data);
    # 2(2-1)/2 x the bytes each. Transformer: 4 per block of B x T x C = 8 x 16 x 16 floats,
    # 4 x 2 x 2048 x 4 = 65536; MLP (B = 128): forward blocks.1 (16) and the head (10),
    # backward blocks.2 (16): 128 x (16 + 10 + 16) x 4 = 21504
    sent = {"transformer": 65536, "mlp": 21504}[family]
    assert out["comm_predicted"] == [sent] * 2
    assert [r["comm_bytes"] for r in out["ranks"]] == [sent] * 2
    assert [set(r["collectives"]) for r in out["ranks"]] == [{"all_reduce"}] * 2


def test_tp_is_refused_where_it_cannot_split():
    cases = {("--model", "cnn"): "applies to --model transformer or mlp",
             ("--model", "transformer", "--heads", "3", "--width", "12"):
                 "--heads 3 must be divisible by --workers 2",
             ("--model", "mlp", "--width", "15"): "--width 15 must be divisible by --workers 2",
             ("--model", "mlp", "--norm", "layer"): "needs --norm none"}
    for flags, why in cases.items():
        proc = run_cli("--headless", *flags, "--device", "cpu", "--workers", "2",
                       "--parallel", "tp")
        assert proc.returncode == 2 and why in proc.stderr, (flags, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1


PP = {  # (flags, schedule, microbatches, what each stage holds)
    # 2 blocks on 2 stages: stage 0 the embeddings and block 0, stage 1 block 1, norm, head
    "transformer": (TP["transformer"][0], "gpipe", "4"),
    # stage 0: blocks.0.fc (16 x 32 + 16 = 528); stage 1: blocks.1.fc (16 x 16 + 16) and the
    # head (10 x 16 + 10): 272 + 170 = 442
    "mlp": (("--model", "mlp", "--layers", "2", "--width", "16", "--batch-size", "32"),
            "1f1b", "2"),
}


@pytest.mark.parametrize("family", list(PP))
def test_pp_trains_as_one_process_each_stage_holding_its_blocks(tmp_path, family):
    flags, schedule, m = PP[family]
    out = run_json(*flags, "--device", "cpu", "--workers", "2", "--parallel", "pp",
                   "--pipeline-schedule", schedule, "--microbatches", m, "--steps", "15",
                   "--sample-every", "5", "--runs-dir", str(tmp_path / "pp"))
    assert out["status"] == "finished" and out["parallel"] == "pp"
    # the mean of the microbatches' mean losses, their gradients averaged: one batch's step
    train, val = one_process(tmp_path, flags, 15)
    assert losses(out["run_dir"]) == pytest.approx(train, rel=1e-5)
    assert out["final_val_loss"] == pytest.approx(val, rel=1e-5)    # through both stages
    held = [r["param_bytes"] // 4 for r in out["ranks"]]
    assert sum(held) == out["params"]                   # every parameter on exactly one stage
    if family == "mlp":
        assert held == [528, 442]
    assert out["replicas_identical"] is None and out["bubble_predicted"] == 1 / (int(m) + 1)
    # the boundary carries the batch's activations forward (stage 0 sends them) and their
    # gradients back (stage 1 sends those): transformer 8 x 16 x 16 x 4 = 8192 bytes,
    # MLP 32 x 16 x 4 = 2048
    sent = {"transformer": 8192, "mlp": 2048}[family]
    assert out["comm_predicted"] == [sent] * 2
    assert [r["collectives"]["send_recv"]["bytes"] for r in out["ranks"]] == [sent] * 2


@pytest.mark.parametrize("m", [1, 4])
def test_the_measured_pp_bubble_is_the_formulas_when_stages_are_equal(tmp_path, m):
    """(p-1)/(m+p-1) assumes equal stages and free communication. Every stage here sleeps
    40 ms before each microbatch's backward (--straggle), so the stages are equal and that
    time dominates their work (a forward of the 16-wide MLP and a send between stages take
    about a millisecond). What is left over, the sends and a loaded machine's scheduling,
    only adds idle time: the tolerance, 0.06, is several such milliseconds per step."""
    out = run_json("--model", "mlp", "--layers", "2", "--width", "16", "--batch-size", "16",
                   "--device", "cpu", "--workers", "2", "--parallel", "pp", "--microbatches",
                   str(m), "--straggle", "rank0:40ms,rank1:40ms", "--steps", "9",
                   "--sample-every", "2", "--runs-dir", str(tmp_path / "pp"))
    predicted = (2 - 1) / (m + 2 - 1)                   # m=1: 1/2; m=4: 1/5
    assert out["bubble_predicted"] == pytest.approx(predicted)
    for rank in out["ranks"]:
        assert predicted - 0.02 <= rank["bubble_fraction"] <= predicted + 0.06, rank


def test_pp_is_refused_where_it_cannot_cut_the_model():
    cases = {("--model", "cnn"): "applies to --model transformer or mlp",
             ("--model", "mlp", "--layers", "1"): "--layers 1 is fewer",
             ("--model", "mlp", "--batch-size", "10", "--microbatches", "4"):
                 "--microbatches 4 must divide --batch-size 10: allowed 1, 2, 5, 10",
             ("--model", "mlp", "--microbatches", "1", "--pipeline-schedule", "1f1b"):
                 "1f1b needs --microbatches >= the stages",
             ("--model", "mlp", "--pipeline-schedule", "zb"): "is not one of: gpipe, 1f1b"}
    for flags, why in cases.items():
        proc = run_cli("--headless", *flags, "--device", "cpu", "--workers", "2",
                       "--parallel", "pp")
        assert proc.returncode == 2 and why in proc.stderr, (flags, proc.stderr)
    ddp = run_cli("--headless", *SMALL, "--workers", "2", "--microbatches", "2")
    assert ddp.returncode == 2 and "--microbatches applies to --parallel pp" in ddp.stderr
