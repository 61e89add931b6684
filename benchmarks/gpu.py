"""On a GPU: steps/s and MFU of lsml-tui's run loop against a bare nanoGPT-style loop.

For each workload, eager and compiled, two arms run in this process, interleaved
chunk by chunk (the order alternating from one repeat to the next) so that clock
and thermal drift hit them alike:

  lsml   lsml-tui's run loop (``Trainer.advance``, without validation) with the
         default live profiling and the run store, as a run does it: bf16
         autocast, fused AdamW, batches drawn on the device, values read back a
         step late, never a sync on an ordinary step; compiled with
         ``--compile reduce-overhead``
  bare   the textbook fast loop of nanoGPT over its own copy of the same model:
         bf16 autocast, ``torch.optim.AdamW(..., fused=True)``, batches drawn on
         the device, ``clip_grad_norm_(params, 1.0)``, ``zero_grad(set_to_none=True)``
         and ``loss.item()`` only every 100 steps; compiled with
         ``torch.compile(model, mode="reduce-overhead")``

Both arms use the same math mode (bf16 where the GPU has it, else fp32), the
same architecture, initial weights, batch size, learning rate and weight decay,
and each draws its batches with ``task.batch("train", B, gen)`` from its own
generator on the device. Workloads: ``shakespeare`` is nanoGPT's
shakespeare-char model size (6 layers, d_model 384, 6 heads, seq_len 256,
batch 64) on lsml-tui's built-in character-level text task; ``mlp``, ``cnn``,
``rnn`` and ``transformer`` are the four default workloads at their default
sizes and batch sizes.

Each arm is warmed up first (allocator, cuDNN, the FLOP count; compilation and
CUDA graph recording need a few dozen steps), then timed in chunks of --chunk
steps with ``torch.cuda.synchronize()`` at both ends of every chunk (both arms
alike). With the default chunk of 100 (= --sample-every) every lsml chunk holds
exactly one profiled step, which runs eager. Prints the median steps/s of each
arm over --repeats chunks, their ratio lsml/bare, and the MFU of both: FLOPs per
step (counted by lsml-tui's profiler on its first step; the same count for both
arms, as it is the same model and batch) times steps/s over the GPU's peak
FLOP/s for the math mode. Goal: every lsml/bare ratio >= 0.90.

    python benchmarks/gpu.py [--repeats 7] [--models shakespeare,mlp,cnn,rnn,transformer]
                             [--compile-modes off,reduce-overhead] [--chunk 100]

Without a CUDA device it prints "no CUDA device" and exits 0. ``--device cpu``
runs the same code on the CPU with bf16 CPU autocast, as a smoke test:

    python benchmarks/gpu.py --device cpu --models mlp,shakespeare --compile-modes off \\
                             --repeats 2 --chunk 5
"""

from __future__ import annotations

import argparse
import copy
import gc
import platform
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext

import torch

from lsml_tui.profilers.peaks import peak_flops
from lsml_tui.profilers.system import SystemSampler
from lsml_tui.trainer.config import RunConfig, to_toml
from lsml_tui.trainer.validate import resolve
from lsml_tui.trainer.loop import Trainer
from lsml_tui.trainer.optim.optimizers import param_groups
from lsml_tui.trainer.store.writer import RunStore

GOAL = 0.90
ITEM_EVERY = 100        # the bare loop reads its loss this often, as nanoGPT logs it

# name -> the RunConfig fields of the workload (the rest at their defaults)
WORKLOADS = {
    "shakespeare": dict(model="transformer", layers=6, width=384, heads=6, seq_len=256,
                        batch_size=64),
    "mlp": dict(model="mlp"),
    "cnn": dict(model="cnn"),
    "rnn": dict(model="rnn"),
    "transformer": dict(model="transformer"),
}
# A smoke test on a CPU (--device cpu): bf16 there is mostly emulated, and a shakespeare step
# at batch 64 takes minutes; the architecture stays, the batch and the context shrink.
CPU_SMOKE = {"shakespeare": dict(batch_size=1, seq_len=64)}


def math_mode(device: torch.device) -> str:
    """bf16 where the device has it (any CPU, a GPU from Ampere on), else fp32."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp32"
    return "bf16"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def adamw(groups: list[dict], lr: float):
    """Fused AdamW (one kernel for the whole update); unfused where this torch has no
    fused kernel for the device."""
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr)


def lsml_arm(cfg: RunConfig, runs_dir: str):
    """lsml-tui's run loop as a run drives it: default profiling, system sampler, run store."""
    store = RunStore.create(runs_dir, cfg.to_dict(), to_toml(cfg))
    trainer = Trainer(cfg, store=store)
    sampler = SystemSampler(trainer.on_system_sample).start()

    def steps(n: int) -> None:
        for _ in range(n):
            if not trainer.advance():
                raise RuntimeError(f"the lsml-tui run stopped at step {trainer.step} "
                                   f"(a non-finite or exploding loss)")

    def close() -> None:
        sampler.stop()
        store.close()

    return trainer, steps, close


def bare_arm(trainer: Trainer, compile_mode: str, mode: str):
    """nanoGPT's loop over a copy of the trainer's model (taken before its first step, so the
    same initial weights), with its own fused AdamW and its own generator on the device."""
    cfg, task, device = trainer.cfg, trainer.task, trainer.device
    model = copy.deepcopy(trainer.model).train()
    net = model if compile_mode == "off" else torch.compile(model, mode=compile_mode)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = adamw(param_groups(model, cfg.weight_decay), cfg.lr)   # nanoGPT's decay split
    gen = torch.Generator(device).manual_seed(0)
    dtype = {"bf16": torch.bfloat16}.get(mode)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else nullcontext
    batch, done = cfg.batch_size, [0]

    def steps(n: int) -> None:
        for _ in range(n):
            x, y = task.batch("train", batch, gen)
            with autocast():
                loss = task.loss(net(x), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            done[0] += 1
            if done[0] % ITEM_EVERY == 0:
                loss.item()

    return steps, opt


def measure(name: str, compile_mode: str, args, runs_dir: str, mode: str) -> dict:
    """Median steps/s of both arms on one workload, and the FLOPs per step and peak."""
    smoke = CPU_SMOKE.get(name, {}) if torch.device(args.device).type == "cpu" else {}
    fields = {**WORKLOADS[name], **smoke}
    cfg = resolve(RunConfig(**fields, optimizer="adamw", precision=mode,
                            compile=compile_mode, device=args.device, steps=10**9,
                            val_every=10**9, runs_dir=runs_dir))
    trainer, lsml_steps, close = lsml_arm(cfg, runs_dir)
    try:
        bare_steps, _ = bare_arm(trainer, compile_mode, mode)
        arms = {"lsml": lsml_steps, "bare": bare_steps}
        warmup = args.warmup if args.warmup is not None else (
            max(1, args.chunk // 5) if compile_mode == "off" else max(50, args.chunk // 5))
        for fn in arms.values():
            fn(warmup)
        sync(trainer.device)
        rates: dict[str, list[float]] = {arm: [] for arm in arms}
        order = list(arms)
        for _ in range(args.repeats):
            for arm in order:
                sync(trainer.device)
                t0 = time.perf_counter()
                arms[arm](args.chunk)
                sync(trainer.device)
                rates[arm].append(args.chunk / (time.perf_counter() - t0))
            order.reverse()
        if not trainer.settle(0):           # the values still in flight
            raise RuntimeError(f"the lsml-tui run diverged by step {trainer.step}")
        flops = trainer.profiler.flops.total if trainer.profiler.flops is not None else None
        return {"lsml": statistics.median(rates["lsml"]),
                "bare": statistics.median(rates["bare"]),
                "flops": flops, "peak": peak_flops(trainer.device, trainer.precision.mode)}
    finally:
        close()


def mfu(rate: float, flops: int | None, peak: float | None) -> str:
    return f"{100 * flops * rate / peak:.1f}%" if flops and peak else "-"


def release(device: torch.device) -> None:
    """Between rows: compiled graphs, CUDA graph pools and cached blocks let go."""
    gc.collect()
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="timed chunks per arm (median)")
    ap.add_argument("--models", default=",".join(WORKLOADS),
                    help=f"comma list of: {', '.join(WORKLOADS)}")
    ap.add_argument("--compile-modes", default="off,reduce-overhead",
                    help="comma list of torch.compile modes; off is eager")
    ap.add_argument("--chunk", type=int, default=100, help="steps per timed chunk")
    ap.add_argument("--warmup", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = ap.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    modes = [m.strip() for m in args.compile_modes.split(",") if m.strip()]
    unknown = [m for m in models if m not in WORKLOADS]
    if unknown:
        ap.error(f"--models: unknown {', '.join(unknown)}; allowed: {', '.join(WORKLOADS)}")
    if args.repeats < 1 or args.chunk < 1:
        ap.error("--repeats and --chunk must be >= 1")

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device")
        return 0
    mode = math_mode(device)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"CPU {platform.processor() or platform.machine()}, "
                  f"{torch.get_num_threads()} threads")
    print(f"{where}, torch {torch.__version__}, math mode {mode}, "
          f"{args.repeats} repeats x {args.chunk} steps per arm, medians")
    print(f"{'workload':<12} {'compile':<16} {'lsml/s':>9} {'bare/s':>9} {'lsml/bare':>10} "
          f"{'MFU lsml':>9} {'MFU bare':>9}", flush=True)
    if device.type == "cpu":
        shrunk = [f"{name} at " + ", ".join(f"{k} {v}" for k, v in CPU_SMOKE[name].items())
                  for name in models if name in CPU_SMOKE]
        print("(on the CPU: a smoke test, not a measurement"
              + "".join(f"; {s}" for s in shrunk) + ")")
    met = failed = total = 0
    with tempfile.TemporaryDirectory() as runs_dir:
        for name in models:
            for compile_mode in modes:
                total += 1
                try:
                    r = measure(name, compile_mode, args, runs_dir, mode)
                except Exception as e:   # noqa: BLE001 - no C compiler, out of memory, ...
                    failed += 1
                    first = (str(e).strip().splitlines() or [""])[0][:200]
                    print(f"{name:<12} {compile_mode:<16} failed: {type(e).__name__}: {first}",
                          flush=True)
                    release(device)
                    continue
                ratio = r["lsml"] / r["bare"]
                met += ratio >= GOAL
                print(f"{name:<12} {compile_mode:<16} {r['lsml']:>9.1f} {r['bare']:>9.1f} "
                      f"{ratio:>10.3f} {mfu(r['lsml'], r['flops'], r['peak']):>9} "
                      f"{mfu(r['bare'], r['flops'], r['peak']):>9}", flush=True)
                release(device)
    print(f"{met} of {total} rows met the goal lsml/bare >= {GOAL:.2f}"
          + (f" ({failed} failed)" if failed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
