"""What ``lsml_tui.watch`` costs a user's own loop: steps/s with and without it.

Two copies of one model (same weights, same batches, same optimizer settings) train in
this process, interleaved chunk by chunk so that machine noise hits them alike:

  bare      forward, backward, clip_grad_norm_, step, zero_grad: a plain PyTorch loop
  watched   the same loop under lsml_tui.watch with its defaults (sample_every=100:
            the global norm and a store row every step; FLOPs, saved activations,
            per-layer norms and phases every 100 steps; system load once a second),
            plus run.log(loss=loss) every step

Each chunk is one sampling period (100 steps, so every watched chunk holds exactly one
sampled step). Prints the median steps/s of each arm and watched/bare for a small MLP
and a small transformer (the built-in models' defaults). Goal: every ratio >= 0.97.

    python benchmarks/watch.py [--repeats 7] [--models mlp,transformer]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch

import lsml_tui
from lsml_tui.trainer.config import RunConfig
from lsml_tui.trainer.data import build_task
from lsml_tui.trainer.models import build_model
from lsml_tui.trainer.validate import resolve

CHUNK = 100             # lsml_tui.watch's default sample_every


def loop(model, task, batch: int, runs_dir: str | None):
    """A plain loop over `model`, watched when `runs_dir` is given; returns steps(n)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    run = lsml_tui.watch(model, opt, runs_dir=runs_dir) if runs_dir else None
    gen = torch.Generator().manual_seed(0)

    def steps(n: int) -> None:
        for _ in range(n):
            x, y = task.batch("train", batch, gen)
            loss = task.loss(model(x), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if run is not None:
                run.log(loss=loss)
    return steps, run


def measure(name: str, repeats: int) -> tuple[float, float]:
    cfg = resolve(RunConfig(model=name, device="cpu"))
    torch.manual_seed(0)
    task = build_task(cfg, torch.device("cpu"))
    bare_model = build_model(cfg, task.model_fields)
    watched_model = copy.deepcopy(bare_model)
    with tempfile.TemporaryDirectory() as runs:
        arms = {"bare": loop(bare_model, task, cfg.batch_size, None),
                "watched": loop(watched_model, task, cfg.batch_size, runs)}
        for steps, _ in arms.values():          # warm-up: allocator, FLOP count, threads
            steps(CHUNK)
        rates: dict[str, list[float]] = {arm: [] for arm in arms}
        for _ in range(repeats):
            for arm, (steps, _) in arms.items():
                start = time.perf_counter()
                steps(CHUNK)
                rates[arm].append(CHUNK / (time.perf_counter() - start))
        arms["watched"][1].finish()
    return statistics.median(rates["bare"]), statistics.median(rates["watched"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--models", default="mlp,transformer")
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, chunks of {CHUNK} "
          f"steps, median of {args.repeats}")
    print(f"{'model':12} {'bare steps/s':>13} {'watched steps/s':>16} {'watched/bare':>13}")
    for name in args.models.split(","):
        bare, watched = measure(name, args.repeats)
        print(f"{name:12} {bare:13.1f} {watched:16.1f} {watched / bare:13.3f}")


if __name__ == "__main__":
    main()
