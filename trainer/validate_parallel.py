"""Validating --parallel and the flags that go with it (part of ``resolve``, validate.py).

No torch here: a mode the model, optimizer or sizes cannot run is refused in one line
naming what is allowed, before any rank starts.
"""

from __future__ import annotations

import os

from lsml_tui.trainer import specs
from lsml_tui.trainer.config import ConfigError, flag, suggest


def ranks(cfg) -> int:
    """The ranks the run will have: --workers, or the group torchrun started this process in
    (--workers left out)."""
    if cfg.workers == 1 and "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    return cfg.workers


def check_parallel(cfg, norm: str, batch: int) -> dict:
    """Refuse a --parallel mode this run cannot use (`norm` and `batch` are resolved);
    return the mode's defaults to fill in."""
    mode = cfg.parallel
    if mode not in specs.PARALLEL:
        raise ConfigError(f"{flag('parallel')} {mode!r} is not one of: "
                          f"{', '.join(specs.PARALLEL)}{suggest(mode, specs.PARALLEL)}")
    for name, owner in (("reshard_after_forward", "fsdp"), ("microbatches", "pp"),
                        ("pipeline_schedule", "pp")):
        if getattr(cfg, name) is not None and mode != owner:
            raise ConfigError(f"{flag(name)} applies to --parallel {owner} (got "
                              f"--parallel {mode})")
    if mode == "ddp":
        return {}
    n = ranks(cfg)
    if n < 2:
        raise ConfigError(f"--parallel {mode} shards across ranks: it needs --workers 2 or "
                          f"more (got {n})")
    if cfg.optimizer in specs.UNSHARDABLE:
        raise ConfigError(f"--parallel {mode} with --optimizer {cfg.optimizer}: "
                          f"{specs.UNSHARDABLE[cfg.optimizer]}; allowed: "
                          f"{', '.join(o for o in specs.OPTIMIZERS if o not in specs.UNSHARDABLE)}")
    if cfg.sharpness_every is not None:
        raise ConfigError(f"--sharpness-every with --parallel {mode}: the preconditioner it "
                          f"reads is sharded across ranks; use ddp")
    if mode in specs.SPLIT_MODEL and cfg.average is not None:
        raise ConfigError(f"--average with --parallel {mode}: the averaged copy of the "
                          f"weights would be whole on every rank; use ddp, zero1 or fsdp")
    if mode in ("fsdp", "tp") and cfg.precision == "fp16":
        raise ConfigError(f"--precision fp16 with --parallel {mode}: the gradient scaler "
                          f"checks each rank's shard for overflow on its own, so the ranks "
                          f"could disagree on skipping a step; use bf16 or fp32")
    if mode in specs.SPLIT_MODEL and cfg.compile != "off":
        raise ConfigError(f"--compile with --parallel {mode}: not supported here (the split "
                          f"model runs eager); use --compile off")
    if mode == "tp":
        check_tensor_parallel(cfg, norm, n)
    if mode == "pp":
        return check_pipeline(cfg, batch, n)
    return {}


def check_tensor_parallel(cfg, norm: str, n: int) -> None:
    """tp splits the transformer by heads and its MLP by width, the MLP by width."""
    if cfg.model not in specs.TENSOR_PARALLEL:
        raise ConfigError(f"--parallel tp splits Linear layers Megatron's way: it applies to "
                          f"--model {' or '.join(specs.TENSOR_PARALLEL)} (got {cfg.model})")
    if cfg.model == "transformer" and cfg.heads % n:
        raise ConfigError(f"--parallel tp splits attention by heads: --heads {cfg.heads} must "
                          f"be divisible by --workers {n}")
    if cfg.width % n:
        raise ConfigError(f"--parallel tp splits the width: --width {cfg.width} must be "
                          f"divisible by --workers {n}")
    if cfg.model == "mlp" and norm != "none":
        raise ConfigError(f"--parallel tp with --model mlp needs --norm none (got {norm}): a "
                          f"norm after a column-parallel layer sees only its rank's features")


def check_pipeline(cfg, batch: int, n: int) -> dict:
    """pp cuts the blocks into n stages and each batch into microbatches."""
    if cfg.model not in specs.PIPELINE:
        raise ConfigError(f"--parallel pp cuts the model's blocks into stages: it applies to "
                          f"--model {' or '.join(specs.PIPELINE)} (got {cfg.model})")
    if cfg.layers < n:
        raise ConfigError(f"--parallel pp puts at least one block on each of --workers {n} "
                          f"stages: --layers {cfg.layers} is fewer; use --layers {n} or more")
    m = specs.MICROBATCHES if cfg.microbatches is None else cfg.microbatches
    if m < 1 or batch % m:
        allowed = [d for d in range(1, batch + 1) if batch % d == 0]
        raise ConfigError(f"--microbatches {m} must divide --batch-size {batch}: allowed "
                          f"{', '.join(map(str, allowed))}")
    schedule = cfg.pipeline_schedule or specs.PIPELINE_SCHEDULES[0]
    if schedule not in specs.PIPELINE_SCHEDULES:
        raise ConfigError(f"--pipeline-schedule {schedule!r} is not one of: "
                          f"{', '.join(specs.PIPELINE_SCHEDULES)}")
    if schedule == "1f1b" and m < n:
        raise ConfigError(f"--pipeline-schedule 1f1b needs --microbatches >= the stages "
                          f"(--workers {n}); got {m}")
    if cfg.precision == "fp16":
        raise ConfigError("--precision fp16 with --parallel pp: the schedule runs backward "
                          "itself, without the gradient scaler; use bf16 or fp32")
    return {"microbatches": m, "pipeline_schedule": schedule}
