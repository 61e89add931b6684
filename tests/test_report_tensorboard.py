"""`lsml-tui report --format tensorboard`: event files from real runs, read back with
TensorBoard's own event reader and checked against the run store; where the files go, a
re-export, and the missing optional extra."""

import argparse
import json
import sqlite3
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, metadata

from lsml_tui.trainer.store.schema import DB_NAME
from lsml_tui.trainer.store.writer import RunStore
from lsml_tui.trainer.store.reader import open_run
from lsml_tui.tui import history
from lsml_tui.tui.report import DEFAULT_FORMATS
from lsml_tui.tui.report.tensorboard import write_tensorboard

from tests.conftest import run_cli, run_here

CLIP = 0.5
# Labels in a sample, not measurements: the step, the system sampler's clock, rank and GPU
# ids, a process id, the FLOP count's input shape, parameter names.
LABELS = {"step", "time", "rank", "index", "pid", "input_shape", "names"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two real headless runs: the MLP with clipping, profiling, sharpness and an EMA of the
    weights; the linear model, whose theory samples come every step."""
    runs_dir = tmp_path_factory.mktemp("tensorboard") / "runs"
    mlp = run_here("--model", "mlp", "--steps", "60", "--val-every", "20", "--sample-every",
                   "20", "--clip", str(CLIP), "--sharpness-every", "40", "--average", "ema:0.9",
                   "--runs-dir", str(runs_dir))
    linear = run_here("--model", "linear", "--steps", "40", "--val-every", "20",
                      "--sample-every", "20", "--runs-dir", str(runs_dir))
    return {"mlp": Path(mlp["run_dir"]), "linear": Path(linear["run_dir"])}


def event_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*tfevents*"))


def export(*args: str) -> list[Path]:
    """The real CLI; the paths it printed."""
    proc = run_cli("report", *args, "--format", "tensorboard")
    assert proc.returncode == 0, proc.stderr
    return [Path(line) for line in proc.stdout.splitlines()]


def read(path: Path) -> EventAccumulator:
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})  # keep all
    acc.Reload()
    return acc


def series(acc: EventAccumulator, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in acc.Scalars(tag)}


def f32(value) -> float:
    """What a TensorBoard scalar (a float32) holds for `value`."""
    return float(np.float32(value))


def numbers(value):
    """Every number in a stored sample's payload (bools as 0/1), labels left out."""
    if isinstance(value, (bool, int, float)):
        yield float(value)
    elif isinstance(value, dict):
        for key, v in value.items():
            if key not in LABELS:
                yield from numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from numbers(v)


@pytest.fixture(scope="module")
def exported(runs):
    """Each run exported once through the CLI into its own directory, read back."""
    out = {}
    for name, run_dir in runs.items():
        path, = export(str(run_dir))
        assert event_files(run_dir) == [path]
        out[name] = read(path)
    return out


def test_every_step_matches_the_store(runs, exported):
    acc = exported["mlp"]
    with open_run(runs["mlp"]) as store:
        steps, val, clips = store.steps(), store.val(), store.clips()
    assert len(steps["step"]) == 60 and len(val["step"]) == 3
    for tag, column in [("train/loss", "loss"), ("train/lr", "lr"),
                        ("grad_norm/pre_clip", "grad_norm"),
                        ("grad_norm/post_clip", "grad_norm_clipped"),
                        ("grad_norm/clipped", "clipped"),
                        ("train/examples_per_second", "examples_per_second")]:
        assert series(acc, tag) == {s: f32(v) for s, v in zip(steps["step"], steps[column])}, tag
    # each step's events carry the store's own wall time for that step
    assert [e.wall_time for e in acc.Scalars("train/loss")] == steps["time"]
    assert series(acc, "val/loss") == {s: f32(v) for s, v in zip(val["step"], val["loss"])}
    assert series(acc, "grad_norm/clip_threshold") == {
        s: f32(v) for s, v in zip(clips["step"], clips["threshold"])}
    assert series(acc, "grad_norm/clip_scale") == {
        s: f32(v) for s, v in zip(clips["step"], clips["scale"])}
    # clipping fired, and after it the norm is the threshold: min(pre, 0.5)
    pre, post = series(acc, "grad_norm/pre_clip"), series(acc, "grad_norm/post_clip")
    assert clips["step"] and all(pre[s] > CLIP for s in clips["step"])
    for s in pre:
        assert post[s] == pytest.approx(min(pre[s], CLIP), rel=1e-5)


def test_memory_flops_sharpness_and_averaged_val_are_the_stores(runs, exported):
    acc = exported["mlp"]
    with open_run(runs["mlp"]) as store:
        memory, (flops,) = store.samples("MemorySample"), store.samples("FlopTable")
        timing, sharp = store.samples("TimingSample"), store.samples("SharpnessSample")
        averaged = store.samples("AveragedVal")
    assert memory and timing and sharp and averaged
    for part in ("saved_activation_bytes", "param_bytes", "grad_bytes", "optimizer_state_bytes"):
        assert series(acc, f"memory/{part}") == {m["step"]: f32(m[part]) for m in memory}
    assert series(acc, "flops/forward_per_step") == {flops["step"]: f32(flops["forward"])}
    assert series(acc, "flops/backward_per_step") == {flops["step"]: f32(flops["backward"])}
    for module, (forward, backward) in flops["per_module"].items():
        assert series(acc, f"flops_per_module/{module}/backward") == {flops["step"]: f32(backward)}
    measured = [t for t in timing if t["mfu"] is not None]    # the first sample has no rate yet
    assert measured
    assert series(acc, "flops/mfu") == {t["step"]: f32(t["mfu"]) for t in measured}
    assert series(acc, "flops/achieved_per_second") == {
        t["step"]: f32(t["flops_per_second"]) for t in measured}
    assert series(acc, "sharpness/value") == {s["step"]: f32(s["sharpness"]) for s in sharp}
    assert series(acc, "sharpness/threshold") == {s["step"]: f32(s["threshold"]) for s in sharp}
    assert series(acc, "val/loss_averaged") == {a["step"]: f32(a["val_loss"]) for a in averaged}
    assert "memory/cuda_peak_bytes" not in acc.Tags()["scalars"]     # null on a CPU: left out


@pytest.mark.parametrize("name", ["mlp", "linear"])
def test_every_number_of_every_sample_is_exported(runs, exported, name):
    """Whatever kinds the store holds (a profile added later too): each number a sample
    holds is among the scalars exported at that sample's step."""
    acc = exported[name]
    at_step = defaultdict(list)
    for tag in acc.Tags()["scalars"]:
        for e in acc.Scalars(tag):
            at_step[e.step].append(e.value)
    con = sqlite3.connect(runs[name] / DB_NAME)
    rows = con.execute("SELECT step, kind, payload FROM samples").fetchall()
    con.close()
    kinds = {kind for _, kind, _ in rows}
    assert kinds >= ({"TheoryInfo", "TheorySample"} if name == "linear"
                     else {"FlopTable", "LayerStats", "MemorySample", "TimingSample"})
    checked = 0
    for step, kind, payload in rows:
        for v in numbers(json.loads(payload)):
            assert f32(v) in at_step[step], (kind, step, v)
            checked += 1
    assert checked > len(rows)


def test_the_config_is_the_runs_hparams(runs, exported):
    acc = exported["mlp"]
    with open_run(runs["mlp"]) as store:
        info = store.info()
    content = acc.PluginTagToContent("hparams")
    start = metadata.parse_session_start_info_plugin_data(
        content[metadata.SESSION_START_INFO_TAG])
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    hp = start.hparams
    assert (hp["model"].string_value, hp["optimizer"].string_value) == ("mlp", info.optimizer)
    assert hp["lr"].number_value == info.config["lr"]
    assert hp["clip"].number_value == CLIP
    for key, value in info.config.items():
        if value is None:
            assert key not in hp                            # unset: no value, not "None"
        elif isinstance(value, bool):
            assert hp[key].bool_value == value, key
        elif isinstance(value, (int, float)):
            assert hp[key].number_value == value, key
        elif isinstance(value, str):
            assert hp[key].string_value == value, key
    assert start.start_time_secs == info.created
    assert (end.status, end.end_time_secs) == (api_pb2.STATUS_SUCCESS, info.ended)
    # no experiment summary: TensorBoard builds one hparams table from every run's sessions
    assert metadata.EXPERIMENT_TAG not in content


def test_a_re_export_replaces_the_previous_file_and_no_one_elses(runs, exported):
    run_dir = runs["linear"]
    first, = event_files(run_dir)
    # as if exported long ago (a re-export in the same second would reuse the name anyway)
    first.rename(run_dir / "events.out.tfevents.0000000001.lsml-tui")
    theirs = run_dir / "events.out.tfevents.0000000002.somehost.123.0"    # a user's own
    theirs.write_bytes(b"")
    try:
        path, = export(str(run_dir))
        assert event_files(run_dir) == sorted([path, theirs]) and path.parent == run_dir
    finally:
        theirs.unlink()
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]    # no temporary left
    with open_run(run_dir) as store:
        steps = store.steps()["step"]
    assert [e.step for e in read(path).Scalars("train/loss")] == steps      # once each


def test_several_runs_go_to_out_one_folder_each(runs, tmp_path):
    out = tmp_path / "tb"
    paths = export(str(runs["mlp"]), str(runs["linear"]), "--out", str(out))
    assert sorted(p.parent for p in paths) == sorted(out / d.name for d in runs.values())
    assert sorted(p.name for p in out.iterdir()) == sorted(d.name for d in runs.values())
    by_id = {d.name: d for d in runs.values()}
    for path in paths:
        with open_run(by_id[path.parent.name]) as store:
            steps = store.steps()
        assert series(read(path), "train/loss") == {
            s: f32(v) for s, v in zip(steps["step"], steps["loss"])}


def test_a_run_still_going_keeps_its_session_open_and_skips_what_it_lacks(tmp_path):
    """A hand-written live store: step 1's loss is NaN (the store keeps null), and a sample
    kind this exporter has never heard of."""
    st = RunStore.create(tmp_path, {"model": "mlp", "optimizer": "sgd", "norm": "none",
                                    "momentum": None}, "")
    for step, loss in enumerate([2.0, float("nan"), 1.0]):
        st.record_step(step, 100.0 + step, loss, 0.1, 1.0, 1.0, False, 64.0)
    st.close()
    con = sqlite3.connect(st.run_dir / DB_NAME)
    with con:
        con.execute("INSERT INTO samples (step, time, kind, payload) VALUES (2, 0, ?, ?)",
                    ("FutureSample", json.dumps({"step": 2, "widgets": 3, "label": "x"})))
    con.close()
    acc = read(write_tensorboard(st.run_dir))          # this process is alive: still running
    assert series(acc, "train/loss") == {0: 2.0, 2: 1.0}
    assert series(acc, "train/lr") == {0: f32(0.1), 1: f32(0.1), 2: f32(0.1)}
    assert series(acc, "FutureSample/widgets") == {2: 3.0}
    content = acc.PluginTagToContent("hparams")
    assert metadata.SESSION_END_INFO_TAG not in content
    hp = metadata.parse_session_start_info_plugin_data(
        content[metadata.SESSION_START_INFO_TAG]).hparams
    assert set(hp) == {"model", "optimizer", "norm"}


BLOCKED = ("import sys; sys.modules['tensorboard'] = None\n"
           "from lsml_tui.tui.cli import main\n"
           "sys.exit(main(sys.argv[1:]))")


def test_without_tensorboard_it_is_refused_with_one_line_and_nothing_written(runs, tmp_path):
    run_dir = runs["linear"]
    before = sorted(run_dir.iterdir())
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", BLOCKED, "report", str(run_dir), "--format",
                           "md,tensorboard", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    line, = proc.stderr.splitlines()
    assert "pip install 'lsml-tui[tensorboard]'" in line and "--format tensorboard" in line
    assert proc.stdout == "" and not out.exists() and sorted(run_dir.iterdir()) == before


def test_the_default_formats_do_not_need_tensorboard():
    args = history.parser("lsml-tui", argparse.ArgumentParser).parse_args(["report", "r"])
    assert history.parse_formats(args.format) == list(DEFAULT_FORMATS) == ["html", "md", "json", "csv"]


def test_an_unknown_format_lists_tensorboard(runs):
    proc = run_cli("report", str(runs["linear"]), "--format", "parquet")
    assert proc.returncode == 2
    line, = proc.stderr.splitlines()
    assert "html, md, json, csv, tensorboard" in line
