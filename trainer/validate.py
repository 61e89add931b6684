"""Validating a run config: ``resolve`` checks every value and fills every default.

No torch here: the command line refuses bad input before a trainer exists. Each
check raises ``ConfigError`` with one line naming the value and what is allowed.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path

from lsml_tui.trainer import specs
from lsml_tui.trainer.config import ConfigError, RunConfig, flag, suggest
from lsml_tui.trainer.validate_parallel import check_parallel


def _one_of(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{flag(name)} {value!r} is not one of: {', '.join(allowed)}"
                          f"{suggest(value, allowed)}")


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
                 "dim", "kappa", "examples", "noise", "sigma"):
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
    if cfg.sigma is not None and not (math.isfinite(cfg.sigma) and cfg.sigma > 0):
        raise ConfigError(f"--sigma {cfg.sigma} is out of range: must be a finite number > 0")
    dropout = check_regularizers(cfg)
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
    check_weight_decay(wd)
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
    if cfg.device == "cpu":
        check_cores(cfg.workers, cfg.oversubscribe)
    _one_of("sync", cfg.sync, specs.SYNCS)
    fills = check_parallel(cfg, norm, batch)          # the mode's own defaults
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
    if cfg.early_stop is not None and cfg.early_stop < 1:
        raise ConfigError(f"--early-stop {cfg.early_stop} is out of range: must be an integer "
                          f">= 1 (validations without a new best; leave it out for off)")
    restore = cfg.early_stop is not None if cfg.restore_best is None else cfg.restore_best
    return cfg.replace(norm=norm, lr=lr, weight_decay=wd, batch_size=batch, on_diverge=on_diverge,
                       warmup_steps=warmup, decay_every=decay, restore_best=restore,
                       dropout=dropout, **hp, **fills)


def check_regularizers(cfg: RunConfig) -> float | None:
    """--dropout and --train-examples for the chosen family; the dropout to train with
    (0 where the family has dropout slots, None where it has none)."""
    if cfg.train_examples is not None:
        if cfg.model in specs.TRAIN_EXAMPLES_REFUSED:
            raise ConfigError(f"--train-examples does not apply to the {cfg.model} model: "
                              f"{specs.TRAIN_EXAMPLES_REFUSED[cfg.model]}")
        if cfg.train_examples < 1:
            raise ConfigError(f"--train-examples {cfg.train_examples} is out of range: must be "
                              f"an integer >= 1")
    if cfg.model in specs.DROPOUT_REFUSED:
        if cfg.dropout:
            raise ConfigError(f"--dropout does not apply to the {cfg.model} model: "
                              f"{specs.DROPOUT_REFUSED[cfg.model]}")
        return None
    dropout = 0.0 if cfg.dropout is None else cfg.dropout
    check_dropout(dropout)
    return dropout


def check_dropout(p: float) -> None:
    if not (math.isfinite(p) and 0 <= p < 1):
        raise ConfigError(f"--dropout {p} is out of range: must be in [0, 1)")


def check_weight_decay(wd: float) -> None:
    if not (math.isfinite(wd) and wd >= 0):
        raise ConfigError(f"--weight-decay {wd} is out of range: must be a finite number >= 0")


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


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_cores(workers: int, oversubscribe: bool) -> None:
    """CPU ranks share the cores (each gets cores / N threads): more ranks than cores is
    refused unless asked for."""
    if workers > cores() and not oversubscribe:
        raise ConfigError(f"--workers {workers} is more than the {cores()} cores here: CPU "
                          f"ranks share the cores (cores / N threads each); use --workers "
                          f"{cores()} or fewer, or --oversubscribe to run them anyway")


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
    why = _cannot_create_in(probe)
    if why:
        raise ConfigError(f"--runs-dir {runs_dir!r} cannot be created ({str(probe)!r}: {why})")


def _cannot_create_in(folder: Path) -> str | None:
    """Why nothing can be made in `folder` (a file system that says writable and is not:
    /proc, a read-only mount, a full disk), or None; tried with a directory removed at once."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".lsml-tui-probe-", dir=folder))
    except OSError as e:
        return e.strerror or type(e).__name__
    return None


def check_out_dir(path: str) -> str:
    """An --out directory that exists or can be made and written; returned as given."""
    p = Path(path)
    existing = next((q for q in (p, *p.parents) if q.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK) \
            or _cannot_create_in(existing):
        raise ConfigError(f"--out {path!r} cannot be written (nearest existing: {existing})")
    return path
