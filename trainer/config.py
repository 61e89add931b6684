"""The run config: one flat dataclass, read from flags and TOML, validated up front.

No torch here: the command line and the UI validate input before a trainer exists.
A field left ``None`` means "the model's or the optimizer's default"; ``resolve``
fills every default so the effective config is explicit and can be printed,
stored and fed back with ``--config``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from . import specs


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
    straggle: str | None = _f(None, "injected delays before each backward: exp:20ms (every "
                                    "rank, Exp-distributed), rank1:50ms (one slow rank); "
                                    "comma-separated", "str")
    dist_timeout: float = _f(60.0, "seconds a rank waits for the others in a collective before "
                                   "the run fails (a dead or hung rank)", "float")
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


def _one_of(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{flag(name)} {value!r} is not one of: {', '.join(allowed)}"
                          f"{suggest(value, allowed)}")


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


def _which_models(name: str) -> str:
    return ", ".join(m for m, used in specs.MODEL_FIELDS.items() if name in used)


def resolve(cfg: RunConfig) -> RunConfig:
    """Validate every value and fill every default; raise ConfigError on bad input."""
    _one_of("model", cfg.model, specs.MODEL_CONFIGS)
    _one_of("optimizer", cfg.optimizer, specs.OPTIMIZERS)
    _one_of("schedule", cfg.schedule, specs.SCHEDULES)
    model_defaults = specs.MODEL_CONFIGS[cfg.model]()
    used = specs.MODEL_FIELDS[cfg.model]
    changes = {}
    for name in ("layers", "width", "heads", "seq_len", "cell", "activation", "residual", "text",
                 "dim", "kappa", "examples", "noise"):
        value = getattr(cfg, name)
        if name not in used:
            if value is not None:
                raise ConfigError(f"{flag(name)} does not apply to the {cfg.model} model "
                                  f"(it applies to: {_which_models(name)})")
            continue
        if value is None and name != "text":
            changes[name] = getattr(model_defaults, name)
    cfg = cfg.replace(**changes)

    for name in ("layers", "width", "heads", "seq_len"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise ConfigError(f"{flag(name)} {value} is out of range: must be an integer >= 1")
    if cfg.model == "linear":
        if cfg.dim < 1 or cfg.examples < cfg.dim:
            raise ConfigError(f"--dim {cfg.dim} and --examples {cfg.examples}: need dim >= 1 and "
                              f"examples >= dim (X must have full column rank for a unique w*)")
        if not (math.isfinite(cfg.kappa) and cfg.kappa >= 1):
            raise ConfigError(f"--kappa {cfg.kappa} is out of range: must be a finite number >= 1")
        if not (math.isfinite(cfg.noise) and cfg.noise >= 0):
            raise ConfigError(f"--noise {cfg.noise} is out of range: must be a finite number >= 0")
    if cfg.seq_len is not None and cfg.seq_len < 2:
        raise ConfigError(f"--seq-len {cfg.seq_len} is out of range: must be >= 2")
    if cfg.heads is not None and cfg.width % cfg.heads:
        raise ConfigError(f"--heads {cfg.heads} does not divide --d-model {cfg.width}: "
                          f"choose heads among {[h for h in range(1, cfg.width + 1) if cfg.width % h == 0]}")
    for name in ("cell", "activation"):
        if getattr(cfg, name) is not None:
            _one_of(name, getattr(cfg, name), specs.CHOICES[name])
    if cfg.text is not None:
        p = Path(cfg.text)
        if not p.is_file() or not os.access(p, os.R_OK):
            raise ConfigError(f"--text {cfg.text!r} is not a readable file")
        if p.stat().st_size < 1024:
            raise ConfigError(f"--text {cfg.text!r} holds {p.stat().st_size} bytes; "
                              f"at least 1024 are needed to train and validate")

    norm = cfg.norm if cfg.norm is not None else model_defaults.norm
    _one_of("norm", norm, specs.NORMS)
    refusal = specs.norm_refusal(cfg.model, norm)
    if refusal:
        raise ConfigError(f"--norm {norm!r} with --model {cfg.model}: {refusal}")

    opt = specs.OPTIMIZERS[cfg.optimizer]
    hp = {}
    for name in ("momentum", "beta1", "beta2"):
        value = getattr(cfg, name)
        if name not in opt.hparams:
            if value is not None:
                users = [n for n, s in specs.OPTIMIZERS.items() if name in s.hparams]
                raise ConfigError(f"{flag(name)} does not apply to {cfg.optimizer} "
                                  f"(it applies to: {', '.join(users)})")
            continue
        value = opt.defaults[name] if value is None else value
        if not (0.0 <= value < 1.0):
            raise ConfigError(f"{flag(name)} {value} is out of range: must be in [0, 1)")
        hp[name] = value
    if cfg.svrg_every is not None and cfg.optimizer != "svrg":
        raise ConfigError(f"--svrg-every does not apply to {cfg.optimizer} (it applies to: svrg)")
    if cfg.optimizer == "svrg":
        hp["svrg_every"] = opt.defaults["svrg_every"] if cfg.svrg_every is None else cfg.svrg_every
        if hp["svrg_every"] < 1:
            raise ConfigError(f"--svrg-every {hp['svrg_every']} is out of range: must be an "
                              f"integer >= 1")
        if cfg.workers > 1:
            raise ConfigError("--optimizer svrg runs in one process: its snapshot gradient is "
                              "per rank; use --workers 1")
    if cfg.average is not None:
        check_average(cfg.average)
    if cfg.sharpness_every is not None and cfg.sharpness_every < 1:
        raise ConfigError(f"--sharpness-every {cfg.sharpness_every} is out of range: must be an "
                          f"integer >= 1 (leave it out for off)")
    lr = opt.lr if cfg.lr is None else cfg.lr
    check_lr(lr)
    wd = opt.weight_decay if cfg.weight_decay is None else cfg.weight_decay
    if not (math.isfinite(wd) and wd >= 0):
        raise ConfigError(f"--weight-decay {wd} is out of range: must be a finite number >= 0")
    check_clip(cfg.clip)

    on_diverge = cfg.on_diverge if cfg.on_diverge is not None else "stop"
    _one_of("on_diverge", on_diverge, specs.ON_DIVERGE)
    factor = cfg.diverge_factor
    if factor is not None and not (math.isfinite(factor) and factor > 1):
        raise ConfigError(f"--diverge-factor {factor} is out of range: must be a finite number "
                          f"> 1, or 'off'")
    for name in ("steps", "val_every", "val_batches", "sample_every", "skip_limit",
                 "snapshot_every", "diverge_steps"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{flag(name)} {getattr(cfg, name)} is out of range: "
                              f"must be an integer >= 1")
    batch = specs.DEFAULT_BATCH_SIZE[cfg.model] if cfg.batch_size is None else cfg.batch_size
    batch = cfg.examples if batch is None else batch           # linear: full batch
    if batch < 1:
        raise ConfigError(f"--batch-size {batch} is out of range: must be an integer >= 1")
    if cfg.noise_scale_every is not None:
        if cfg.noise_scale_every < 1:
            raise ConfigError(f"--noise-scale-every {cfg.noise_scale_every} is out of range: must "
                              f"be an integer >= 1 (leave it out for off)")
        if batch < 2:
            raise ConfigError(f"--noise-scale-every needs two batch sizes, so --batch-size >= 2 "
                              f"(got {batch})")
        if cfg.workers > 1:
            raise ConfigError("--noise-scale-every is for one process; with --workers > 1 the "
                              "noise scale comes from the ranks (the distributed panel)")
    if cfg.model == "linear" and batch > cfg.examples:
        raise ConfigError(f"--batch-size {batch} is out of range for --examples {cfg.examples}: "
                          f"at most {cfg.examples} (all of them: gradient descent)")
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else max(1, cfg.steps // 20)
    decay = cfg.decay_every if cfg.decay_every is not None else max(1, cfg.steps // 4)
    if warmup < 0 or decay < 1:
        raise ConfigError("--warmup-steps must be >= 0 and --decay-every >= 1")
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.device):
        raise ConfigError(f"--device {cfg.device!r} is not one of: auto, cpu, cuda, cuda:N, mps")
    if cfg.workers < 1:
        raise ConfigError(f"--workers {cfg.workers} is out of range: must be an integer >= 1")
    _one_of("sync", cfg.sync, specs.SYNCS)
    _one_of("precision", cfg.precision, specs.PRECISIONS)
    _one_of("compile", cfg.compile, specs.COMPILE_MODES)
    if cfg.device == "cpu" and cfg.precision == "tf32":
        raise ConfigError("--precision tf32 needs a CUDA GPU (TF32 is a tensor-core mode); "
                          "on --device cpu use fp32 or bf16")
    if cfg.straggle is not None:
        parse_straggle(cfg.straggle)
    if not (math.isfinite(cfg.dist_timeout) and cfg.dist_timeout > 0):
        raise ConfigError(f"--dist-timeout {cfg.dist_timeout} is out of range: must be a "
                          f"number of seconds > 0")
    return cfg.replace(norm=norm, lr=lr, weight_decay=wd, batch_size=batch, on_diverge=on_diverge,
                       warmup_steps=warmup, decay_every=decay, **hp)


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def parse_straggle(text: str) -> tuple[tuple[int | None, float], ...]:
    """'exp:20ms,rank1:50ms' -> ((None, 0.02), (1, 0.05)): None is every rank with an
    Exp-distributed delay of that mean, an int is one rank with a fixed delay."""
    out = []
    for spec in (part.strip() for part in text.split(",")):
        m = re.fullmatch(r"(exp|rank(\d+)):(\d+(?:\.\d*)?)(us|ms|s)", spec)
        if not m:
            raise ConfigError(f"--straggle {spec!r} is not a delay spec; allowed: exp:MEAN "
                              f"(every rank, Exp-distributed) or rankN:DELAY, with a unit "
                              f"us, ms or s (e.g. exp:20ms,rank1:50ms)")
        seconds = float(m.group(3)) * _UNITS[m.group(4)]
        out.append((None if m.group(1) == "exp" else int(m.group(2)), seconds))
    return tuple(out)


def check_average(text: str) -> None:
    m = re.fullmatch(r"polyak|ema:(\d*\.?\d+(?:e-?\d+)?)", text)
    if not m or (m.group(1) is not None and not 0 < float(m.group(1)) < 1):
        raise ConfigError(f"--average {text!r} is not an average; allowed: polyak, or ema:DECAY "
                          f"with 0 < DECAY < 1 (e.g. ema:0.99)")


def check_lr(lr: float) -> None:
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"--lr {lr} is out of range: must be a finite number > 0")


def check_clip(clip: float | None) -> None:
    if clip is not None and not (math.isfinite(clip) and clip > 0):
        raise ConfigError(f"--clip {clip} is out of range: must be a finite number > 0, or 'off'")


def check_runs_dir(runs_dir: str) -> None:
    """Refuse a runs dir that cannot be created or written, without leaving anything."""
    p = Path(runs_dir)
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"--runs-dir {runs_dir!r} is not a directory ({str(probe)!r} is a file)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"--runs-dir {runs_dir!r} is not writable ({str(probe)!r} denies writing)")


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
