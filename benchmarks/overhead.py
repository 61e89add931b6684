"""What live profiling costs: steps/s of the run loop against a bare PyTorch loop.

For each model family's default workload, three arms run in this process,
interleaved chunk by chunk so that machine noise hits them alike:

  bare        forward, backward, clip_grad_norm_, step, zero_grad, loss.item()
  default     lsml-tui's run loop (without validation) with the default live profiling
              and the run store
              (global norm every step; per-layer norms, update ratios, saved
              activations and phase timing every --sample-every steps; FLOPs once;
              system load once a second)
  everything  the same with every measurement on every step (--sample-every 1)
  sharpness   the default arm plus one sharpness measurement (--sharpness-every 100:
              power iteration on Hessian-vector products) per chunk; off by default,
              so this is what turning it on costs, and the seconds one measurement takes
  noise       the default arm plus one gradient-noise-scale measurement per chunk
              (--noise-scale-every 100: one extra forward and backward of a batch in 4
              parts); off by default, likewise

Each chunk is one sampling period (--sample-every steps, so every default chunk
holds exactly one profiled step), and the arms take turns chunk by chunk.
Prints the median steps/s of each arm and the ratios default/bare and
everything/bare. Goal: every default ratio >= 0.97.

    python benchmarks/overhead.py [--repeats 9] [--models mlp,cnn,rnn,transformer]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from lsml_tui.profilers.system import SystemSampler
from lsml_tui.trainer.config import RunConfig, to_toml
from lsml_tui.trainer.validate import resolve
from lsml_tui.trainer.loop import Trainer
from lsml_tui.trainer.store.writer import RunStore


def bare_loop(trainer: Trainer):
    """The textbook loop over the same model, data and optimizer settings, no measuring."""
    cfg, model, task = trainer.cfg, trainer.model, trainer.task
    params = list(model.parameters())
    opt = trainer.optimizer
    gen = torch.Generator().manual_seed(cfg.seed)

    def steps(n: int) -> None:
        for _ in range(n):
            x, y = task.batch("train", cfg.batch_size, gen)
            loss = task.loss(model(x), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss.item()

    return steps


def trainer_arm(cfg: RunConfig, runs_dir: str):
    store = RunStore.create(runs_dir, cfg.to_dict(), to_toml(cfg))
    trainer = Trainer(cfg, store=store)
    sampler = SystemSampler(trainer.on_system_sample).start()

    def steps(n: int) -> None:
        for _ in range(n):
            trainer.advance()

    def close() -> None:
        sampler.stop()
        store.close()

    return trainer, steps, close


def measure(model: str, repeats: int, runs_dir: str) -> dict[str, float]:
    # Validation is a feature of runs, not of profiling, and the bare loop has none.
    base = resolve(RunConfig(model=model, steps=10**9, val_every=10**9, runs_dir=runs_dir))
    default_trainer, default_steps, close_default = trainer_arm(base, runs_dir)
    every = base.replace(sample_every=1)
    _, every_steps, close_every = trainer_arm(every, runs_dir)
    sharp_trainer, sharp_steps, close_sharp = trainer_arm(
        base.replace(sharpness_every=base.sample_every), runs_dir)
    noise_trainer, noise_steps, close_noise = trainer_arm(
        base.replace(noise_scale_every=base.sample_every), runs_dir)
    bare_steps = bare_loop(Trainer(base.replace(profile=False)))
    arms = {"bare": bare_steps, "default": default_steps, "everything": every_steps,
            "sharpness": sharp_steps, "noise": noise_steps}
    seconds, noise_seconds = [], []
    chunk = base.sample_every
    for fn in arms.values():
        fn(chunk // 5)                   # warm-up: allocator, caches, the FLOP count
    rates: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(repeats):
        for name, fn in arms.items():
            t0 = time.perf_counter()
            fn(chunk)
            rates[name].append(chunk / (time.perf_counter() - t0))
        seconds.append(sharp_trainer.sharpness.last.seconds)
        noise_seconds.append(noise_trainer.noise.last.seconds)
    for close in (close_default, close_every, close_sharp, close_noise):
        close()
    return {**{name: statistics.median(r) for name, r in rates.items()},
            "sharpness_s": statistics.median(seconds), "noise_s": statistics.median(noise_seconds)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--models", default="mlp,cnn,rnn,transformer")
    args = ap.parse_args()
    chunk = RunConfig().sample_every
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.repeats} repeats x {chunk} steps per arm, medians")
    print(f"{'workload':<12} {'bare/s':>9} {'default/s':>10} {'every/s':>9} "
          f"{'default/bare':>13} {'every/bare':>11} {'sharp/bare':>11} {'s/sharpness':>12} "
          f"{'noise/bare':>11} {'s/noise':>8}")
    with tempfile.TemporaryDirectory() as runs_dir:
        for model in args.models.split(","):
            r = measure(model, args.repeats, runs_dir)
            print(f"{model:<12} {r['bare']:>9.1f} {r['default']:>10.1f} {r['everything']:>9.1f} "
                  f"{r['default'] / r['bare']:>13.3f} {r['everything'] / r['bare']:>11.3f} "
                  f"{r['sharpness'] / r['bare']:>11.3f} {r['sharpness_s']:>12.3f} "
                  f"{r['noise'] / r['bare']:>11.3f} {r['noise_s']:>8.3f}", flush=True)


if __name__ == "__main__":
    main()
