"""The run config: one flat dataclass, read from flags and TOML, written back as TOML.

No torch here: the command line and the UI read input before a trainer exists.
A field left ``None`` means "the model's or the optimizer's default"; ``resolve``
(validate.py) checks every value and fills every default, so the effective config is
explicit and can be printed, stored and fed back with ``--config``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from lsml_tui.trainer import specs


class ConfigError(ValueError):
    """Bad input: the message is one line naming the value and what is allowed."""


def _f(default, help, kind=None, **extra):
    return field(default=default, metadata={"help": help, "kind": kind, **extra})


@dataclass(frozen=True)
class RunConfig:
    model: str = _f("transformer", "model family: " + ", ".join(specs.MODEL_CONFIGS), "str")
    layers: int | None = _f(None, "blocks / hidden layers (model default)", "int")
    width: int | None = _f(None, "hidden width, CNN channels, RNN hidden size, transformer "
                              "d_model (model default)", "int", aliases=("--d-model",))
    heads: int | None = _f(None, "attention heads, transformer only", "int")
    seq_len: int | None = _f(None, "sequence length (RNN, transformer)", "int")
    cell: str | None = _f(None, "RNN cell: rnn, gru, lstm", "str")
    activation: str | None = _f(None, "MLP activation: relu, gelu, tanh, sigmoid", "str")
    residual: bool | None = _f(None, "CNN residual connections", "bool")
    dim: int | None = _f(None, "linear: dimension of w (default 32)", "int")
    kappa: float | None = _f(None, "linear: condition number L/mu of the least-squares Hessian "
                             "(default 100); L = 1, mu = 1/kappa exactly", "float")
    examples: int | None = _f(None, "linear: rows of X (default 1024; the default batch is all "
                              "of them)", "int")
    noise: float | None = _f(None, "linear: label noise std (default 0.1)", "float")
    text: str | None = _f(None, "train the transformer on this text file instead of the "
                             "Python standard library's source", "str")
    norm: str | None = _f(None, "normalization: " + ", ".join(specs.NORMS) + " (model default)", "str")
    optimizer: str = _f("adam", "optimizer: " + ", ".join(specs.OPTIMIZERS), "str")
    lr: float | None = _f(None, "learning rate (optimizer default)", "float")
    weight_decay: float | None = _f(None, "weight decay (optimizer default)", "float")
    momentum: float | None = _f(None, "momentum (momentum, nesterov, rmsprop, muon)", "float")
    beta1: float | None = _f(None, "first-moment decay (Adam family)", "float")
    beta2: float | None = _f(None, "second-moment decay (Adam family, RMSProp's alpha)", "float")
    svrg_every: int | None = _f(None, "svrg: steps between snapshots and full gradients "
                                "(default 100)", "int")
    sharpness_every: int | None = _f(None, "measure the top Hessian eigenvalue (power iteration "
                                     "on Hessian-vector products, a fixed batch) every this many "
                                     "steps; off by default", "int")
    noise_scale_every: int | None = _f(None, "measure the gradient noise scale B_simple (the "
                                       "batch size beyond which a larger batch pays little) "
                                       "every this many steps, from 4 parts of one batch; off "
                                       "by default (with --workers > 1 it comes from the ranks)",
                                       "int")
    average: str | None = _f(None, "average the weights: polyak (the running mean of every "
                             "iterate) or ema:DECAY (0 < DECAY < 1); the averaged weights are "
                             "validated too", "str")
    schedule: str = _f("constant", "LR schedule: " + ", ".join(specs.SCHEDULES), "str")
    warmup_steps: int | None = _f(None, "warm-up steps for warmup-cosine (default steps/20)", "int")
    decay_every: int | None = _f(None, "steps per decay for step and inverse-time "
                                    "(default steps/4)", "int")
    batch_size: int | None = _f(None, "examples per step (model default)", "int")
    steps: int = _f(3000, "training steps", "int")
    clip: float | None = _f(1.0, "clip the global gradient norm at this value, or 'off'", "clip")
    device: str = _f("auto", "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps", "str")
    seed: int = _f(0, "random seed for weights and data", "int")
    val_every: int = _f(100, "steps between validation losses", "int")
    val_batches: int = _f(4, "batches per validation loss", "int")
    early_stop: int | None = _f(None, "stop when the validation loss has not improved for this "
                                "many validations in a row (patience, as Keras and Lightning); "
                                "off by default", "int")
    restore_best: bool | None = _f(None, "end the run with the weights of its best validation "
                                   "loss (default: on with --early-stop, else off)", "bool")
    dropout: float | None = _f(None, "dropout probability in the MLP, CNN and transformer blocks "
                               "(default 0: none); changeable live", "float")
    train_examples: int | None = _f(None, "train on this many examples drawn once (MLP, RFF, "
                                    "CNN; the transformer's first N windows of text; N fixed "
                                    "adding-problem sequences) to see memorization", "int")
    sigma: float | None = _f(None, "rff: kernel bandwidth of the random features, W ~ "
                             "N(0, 1/sigma^2) (default 8: the median distance between two "
                             "inputs)", "float")
    profile: bool = _f(True, "live profiling: FLOPs, saved activations, per-layer gradients, "
                             "timing, system load", "bool")
    sample_every: int = _f(100, "steps between profiling samples", "int")
    runs_dir: str = _f("runs", "where runs/<id>/ are written", "str")
    on_diverge: str | None = _f(None, "when the loss turns NaN or Inf or blows up: stop (headless "
                                "default), pause (dashboard default) or skip the step (a finite "
                                "blow-up has no step to skip: it stops)", "str")
    skip_limit: int = _f(10, "skipped steps in a row (non-finite loss or gradients) before "
                             "the run stops as diverged", "int")
    diverge_factor: float | None = _f(10.0, "a finite loss diverges when its moving average "
                                      "stays above this many times the initial loss, or 'off'",
                                      "clip")
    diverge_steps: int = _f(20, "steps in a row above --diverge-factor before the run is "
                                "diverged", "int")
    workers: int = _f(1, "data-parallel ranks on this machine (torch.distributed: gloo on "
                         "CPU, NCCL on CUDA); --batch-size is per rank", "int")
    sync: str = _f("allreduce", "how ranks combine gradients: " + ", ".join(specs.SYNCS), "str")
    parallel: str = _f("ddp", "how ranks split the work: ddp (every rank holds everything), "
                              "zero1 (DDP with the optimizer state sharded across ranks, "
                              "ZeroRedundancyOptimizer), fsdp (parameters, gradients and "
                              "optimizer state sharded, FSDP2 fully_shard: ZeRO-3), tp "
                              "(Megatron's tensor parallel: attention by heads, the MLP column "
                              "then row) or pp (the blocks split into N pipeline stages)", "str")
    microbatches: int | None = _f(None, "pp: microbatches per step (default 4); must divide "
                                  "--batch-size", "int")
    pipeline_schedule: str | None = _f(None, "pp: " + ", ".join(specs.PIPELINE_SCHEDULES) +
                                       " (default gpipe; 1f1b holds at most N microbatches' "
                                       "activations)", "str")
    reshard_after_forward: bool | None = _f(None, "fsdp: free each block's gathered weights "
                                            "after its forward and gather them again for "
                                            "backward (default; ZeRO-3), or keep them "
                                            "(--no-reshard-after-forward, ZeRO-2-like)", "bool")
    straggle: str | None = _f(None, "injected delays before each backward: exp:20ms (every "
                                    "rank, Exp-distributed), rank1:50ms (one slow rank); "
                                    "comma-separated", "str")
    dist_timeout: float = _f(60.0, "seconds a rank waits for the others in a collective before "
                                   "the run fails (a dead or hung rank)", "float")
    oversubscribe: bool = _f(False, "allow more CPU ranks (--workers) than this machine has "
                                    "cores (each rank then gets a share of a core; slow)", "bool")
    deterministic: bool = _f(False, "torch's deterministic algorithms (same seed, same losses "
                                    "on CUDA too; slower)", "bool")
    precision: str = _f("auto", "math mode: " + ", ".join(specs.PRECISIONS) + " (auto: bf16 on "
                                "a GPU that supports it, else fp32)", "str")
    compile: str = _f("off", "torch.compile the model: " + ", ".join(specs.COMPILE_MODES) +
                      " (bare --compile is default); profiled steps run eager", "str",
                      const="default")
    snapshot_every: int = _f(100, "steps between in-memory copies of the last good weights "
                                  "and optimizer state, for a rewind after divergence", "int")

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def suggest(value: str, allowed) -> str:
    close = difflib.get_close_matches(str(value), list(allowed), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


_EXPECTED = {"int": "an integer", "float": "a number", "clip": "a number or 'off'",
             "str": "a string", "bool": "true or false"}


def parse_value(name: str, text: str):
    """Parse one flag's text into the field's type, or raise ConfigError."""
    kind = FIELDS[name].metadata["kind"]
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "clip":
            return None if text.lower() in ("off", "none", "0") else float(text)
        if kind == "bool":
            return {"true": True, "false": False, "1": True, "0": False}[text.lower()]
    except (ValueError, KeyError):
        expected = _EXPECTED[kind]
        raise ConfigError(f"{flag(name)} {text!r} is not {expected}") from None
    return text


def load_toml(path: str | os.PathLike) -> dict:
    """Read a flat TOML run config, checking keys and types; raise ConfigError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e.strerror}") from None
    text = raw.decode("utf-8", errors="replace")
    if not text.strip():
        raise ConfigError(f"{path}: the config file is empty; expected keys such as "
                          f"model = \"mlp\"")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        where = f"{path}:{m.group(1)}" if m else str(path)
        raise ConfigError(f"{where}: malformed TOML: {str(e).split(' (at line')[0]}") from None

    def line_of(key: str) -> str:
        for i, line in enumerate(text.splitlines(), 1):
            if re.match(rf"\s*{re.escape(key)}\s*=", line):
                return f"{path}:{i}"
        return str(path)

    out = {}
    for key, value in data.items():
        if key not in FIELDS:
            raise ConfigError(f"{line_of(key)}: unknown key {key!r}{suggest(key, FIELDS)}"
                              f" (allowed: {', '.join(FIELDS)})")
        kind = FIELDS[key].metadata["kind"]
        ok = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, (int, float)) and not isinstance(value, bool),
            "clip": (isinstance(value, (int, float)) and not isinstance(value, bool))
            or value in ("off", False),
            "str": isinstance(value, str),
            "bool": isinstance(value, bool),
        }[kind]
        if not ok:
            expected = _EXPECTED[kind]
            raise ConfigError(f"{line_of(key)}: key {key!r} must be {expected}, "
                              f"got {type(value).__name__} {value!r}")
        if kind == "clip" and value in ("off", False):
            value = None
        elif kind == "float":
            value = float(value)
        out[key] = value
    return out


def to_toml(cfg: RunConfig) -> str:
    """The config as flat TOML that ``--config`` reads back; unset values are left out."""
    lines = []
    for name, value in cfg.to_dict().items():
        if value is None:
            if FIELDS[name].metadata["kind"] == "clip":      # 'off' is a value, not a default
                lines.append(f'{name} = "off"')
            continue
        if isinstance(value, bool):
            lines.append(f"{name} = {'true' if value else 'false'}")
        elif isinstance(value, str):
            lines.append(f"{name} = {json.dumps(value)}")
        else:
            lines.append(f"{name} = {value!r}")
    return "\n".join(lines) + "\n"
