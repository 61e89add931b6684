"""Config resolution, TOML files and refusal of bad input before anything starts."""

import math
import subprocess
import sys

import pytest

from lsml_tui.trainer import specs
from lsml_tui.trainer.config import ConfigError, RunConfig, load_toml, to_toml
from lsml_tui.trainer.validate import resolve
from tests.conftest import run_cli


def test_resolve_fills_model_and_optimizer_defaults():
    cfg = resolve(RunConfig(model="rnn", optimizer="momentum"))
    rnn = specs.RNNConfig()
    assert (cfg.layers, cfg.width, cfg.seq_len, cfg.cell, cfg.norm) == (
        rnn.layers, rnn.width, rnn.seq_len, rnn.cell, rnn.norm)
    assert cfg.lr == specs.OPTIMIZERS["momentum"].lr
    assert cfg.momentum == specs.OPTIMIZERS["momentum"].defaults["momentum"]
    assert cfg.batch_size == specs.DEFAULT_BATCH_SIZE["rnn"]
    assert cfg.heads is None and cfg.beta1 is None  # not read by this model / optimizer


@pytest.mark.parametrize("changes, words", [
    ({"model": "resnet9000"}, ["resnet9000", "mlp, rff, cnn, rnn, transformer"]),
    ({"optimizer": "adamm"}, ["adamm", "did you mean 'adam'"]),
    ({"lr": -1.0}, ["-1.0", "> 0"]),
    ({"lr": math.nan}, ["nan", "finite"]),
    ({"batch_size": 0}, ["--batch-size 0", ">= 1"]),
    ({"model": "mlp", "heads": 4}, ["--heads", "transformer"]),
    ({"optimizer": "sgd", "momentum": 0.9}, ["--momentum", "momentum, nesterov"]),
    ({"model": "rnn", "norm": "batch"}, ["batch", "per time step"]),
    ({"model": "transformer", "norm": "batch"}, ["leaks future tokens"]),
    ({"model": "transformer", "width": 64, "heads": 5}, ["--heads 5", "divide"]),
    ({"clip": -2.0}, ["--clip", "'off'"]),
    ({"device": "tpu"}, ["tpu", "cuda"]),
    ({"on_diverge": "paws"}, ["--on-diverge 'paws'", "stop, pause, skip", "did you mean 'pause'"]),
    ({"skip_limit": 0}, ["--skip-limit 0", ">= 1"]),
    ({"diverge_factor": 0.5}, ["--diverge-factor 0.5", "> 1", "'off'"]),
    ({"workers": 0}, ["--workers 0", ">= 1"]),
    ({"sync": "ring"}, ["--sync 'ring'", "allreduce, ps, bf16, powersgd"]),
    ({"straggle": "exp:20"}, ["--straggle 'exp:20'", "rankN:DELAY", "us, ms or s"]),
    ({"straggle": "exp:5ms,rank:3ms"}, ["'rank:3ms'"]),
    ({"dist_timeout": 0.0}, ["--dist-timeout 0.0", "> 0"]),
])
def test_bad_values_are_refused_with_what_is_allowed(changes, words):
    with pytest.raises(ConfigError) as e:
        resolve(RunConfig(**changes))
    message = str(e.value)
    assert "\n" not in message
    for w in words:
        assert w in message


@pytest.mark.parametrize("argv, words", [
    (["--lr", "-1"], ["--lr", "-1"]),
    (["--lr", "nan"], ["--lr", "nan"]),
    (["--lr", "abc"], ["--lr", "'abc'", "number"]),
    (["--batch-size", "0"], ["--batch-size 0"]),
    (["--model", "resnet9000"], ["resnet9000", "mlp, rff, cnn"]),
    (["--optimizer", "adamm"], ["did you mean 'adam'"]),
    (["--bogus-flag"], ["--bogus-flag"]),
    (["--on-diverge", "never"], ["--on-diverge 'never'", "stop, pause, skip"]),
    (["--workers", "0"], ["--workers 0", ">= 1"]),
    (["--workers", "2", "--straggle", "slow"], ["--straggle 'slow'"]),
    (["--workers", "2", "--sync", "gossip"], ["--sync 'gossip'", "ps"]),
])
def test_cli_refuses_bad_input_with_one_line_exit_2_and_writes_nothing(tmp_path, argv, words):
    runs = tmp_path / "runs"
    proc = run_cli("--headless", "--runs-dir", str(runs), *argv)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for w in words:
        assert w in lines[0]
    assert not runs.exists()


def test_cli_refuses_a_runs_dir_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    proc = run_cli("--headless", "--runs-dir", str(blocker / "runs"))
    assert proc.returncode == 2
    assert "--runs-dir" in proc.stderr and "is a file" in proc.stderr
    assert blocker.read_text() == "not a directory"


def write(tmp_path, text: str):
    p = tmp_path / "run.toml"
    p.write_text(text)
    return p


def test_toml_malformed_names_file_and_line(tmp_path):
    p = write(tmp_path, 'model = "mlp"\nlr = \n')
    with pytest.raises(ConfigError, match=rf"{p}:2: malformed TOML"):
        load_toml(p)


def test_toml_unknown_key_names_line_and_suggests(tmp_path):
    p = write(tmp_path, 'model = "mlp"\n\nlrr = 0.1\n')
    with pytest.raises(ConfigError, match=rf"{p}:3: unknown key 'lrr'; did you mean 'lr'"):
        load_toml(p)


def test_toml_wrong_type_names_key_and_expected_type(tmp_path):
    p = write(tmp_path, 'steps = "many"\n')
    with pytest.raises(ConfigError, match=r":1: key 'steps' must be an integer, got str 'many'"):
        load_toml(p)


def test_toml_empty_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="empty"):
        load_toml(write(tmp_path, "\n  \n"))


def test_flags_override_the_config_file_and_print_config_round_trips(tmp_path):
    p = write(tmp_path, 'model = "cnn"\noptimizer = "sgd"\nsteps = 50\nclip = "off"\n')
    proc = run_cli("--config", str(p), "--steps", "70", "--print-config")
    assert proc.returncode == 0, proc.stderr
    printed = write(tmp_path, proc.stdout)
    cfg = RunConfig(**load_toml(printed))
    assert (cfg.model, cfg.optimizer, cfg.steps, cfg.clip) == ("cnn", "sgd", 70, None)
    assert cfg.lr == specs.OPTIMIZERS["sgd"].lr
    assert resolve(cfg) == cfg  # the printed config is already fully resolved


def test_to_toml_round_trips_every_field(tmp_path):
    cfg = resolve(RunConfig(model="transformer", text=None, clip=0.5, schedule="warmup-cosine"))
    assert RunConfig(**load_toml(write(tmp_path, to_toml(cfg)))) == cfg


def test_ui_side_modules_do_not_import_torch():
    code = ("import sys; import lsml_tui.tui.cli, lsml_tui.trainer.config, lsml_tui.trainer.events,"
            " lsml_tui.trainer.commands, lsml_tui.trainer.validate, lsml_tui.trainer.specs,"
            " lsml_tui.trainer.store.writer, lsml_tui.trainer.store.reader,"
            " lsml_tui.trainer.store.inbox, lsml_tui.tui.history, lsml_tui.tui.tuning.sweep,"
            " lsml_tui.tui.app, lsml_tui.tui.report.data, lsml_tui.tui.report.measures;"
            " print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_divergence_pauses_the_dashboard_and_stops_a_headless_run():
    from lsml_tui.tui.cli import build_parser
    from lsml_tui.tui.flags import config_from_args
    assert config_from_args(build_parser().parse_args([])).on_diverge == "pause"
    assert config_from_args(build_parser().parse_args(["--headless"])).on_diverge == "stop"
    chosen = build_parser().parse_args(["--on-diverge", "skip"])
    assert config_from_args(chosen).on_diverge == "skip"
