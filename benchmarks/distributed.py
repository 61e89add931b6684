"""What data parallelism costs and buys here: steps/s and examples/s at 1 and N workers, the
share of step time in communication and waiting, all-reduce against a parameter server,
and what the per-rank instrumentation costs.

For each workload (the default MLP and transformer, profiling off) the ranks are started
by torch's elastic launcher, as ``--workers N`` starts them. Inside one launch, two arms
take turns block by block on every rank, so machine noise hits them alike:

  measured    the per-rank timing as a run has it: comm hook timers and one all_gather
              of every rank's timings once per sampling period (the default
              --sample-every 100; a block is one period, so it holds one sampled step)
  bare        the same DDP loop with the sampling never due

Both arms pay what data parallelism itself needs: DDP's all-reduce and the one small
all-reduce per step that carries the mean loss and rank 0's commands.

Prints medians over blocks and the ratio measured/bare (goal: >= 0.97). On CPU the ranks
use gloo; on a CUDA machine, NCCL with as many ranks as GPUs.

    python benchmarks/distributed.py [--blocks 5] [--models mlp,transformer] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from lsml_tui.trainer.config import RunConfig
from lsml_tui.trainer.validate import resolve

SAMPLE_EVERY = RunConfig().sample_every        # 100, the default
STEPS = SAMPLE_EVERY                             # steps per block: one sampling period


def bench_rank(config: dict, blocks: int, block_steps: int) -> dict | None:
    """One rank: warm up, then alternate the arms block by block; rank 0 returns times."""
    import torch.distributed as dist

    from lsml_tui.trainer.parallel.ddp import join
    from lsml_tui.trainer.loop import Trainer

    cfg = RunConfig(**config)
    dp = join(cfg)
    trainer = Trainer(cfg, dp=dp)
    arms = {"measured": cfg, "bare": cfg.replace(sample_every=10**12)}
    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(block_steps):                 # warm-up: allocator, DDP's bucket rebuild
        trainer.advance()
    for b in range(blocks):
        for name in (("measured", "bare") if b % 2 == 0 else ("bare", "measured")):
            trainer.cfg = arms[name]
            dist.barrier()
            t0 = time.perf_counter()
            for _ in range(block_steps):
                trainer.advance()
            times[name].append(time.perf_counter() - t0)
    summary = dp.summary()
    dp.close()
    return {"times": times, "ranks": summary["ranks"]} if dp.recorder else None


def single(cfg: RunConfig, blocks: int, block_steps: int) -> list[float]:
    from lsml_tui.trainer.loop import Trainer
    trainer = Trainer(cfg)
    for _ in range(block_steps):
        trainer.advance()
    out = []
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(block_steps):
            trainer.advance()
        out.append(time.perf_counter() - t0)
    return out


def launched(cfg: RunConfig, blocks: int, block_steps: int) -> dict:
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch
    spec = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=cfg.workers, run_id="bench",
                        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                        start_method="spawn", logs_specs=DefaultLogsSpecs(log_dir=os.devnull))
    return elastic_launch(spec, bench_rank)(cfg.to_dict(), blocks, block_steps)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--models", default="mlp,transformer")
    ap.add_argument("--workers", type=int, default=None,
                    help="ranks (default: the GPUs on a CUDA machine, else 2)")
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    n = args.workers or (torch.cuda.device_count() if cuda else 2)
    device = "cuda" if cuda else "cpu"
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, {device}, {n} workers "
          f"({'nccl' if cuda else 'gloo'}), {args.blocks} blocks per arm, medians")
    print(f"{'workload':<12} {'workers':>7} {'sync':>9} {'steps/s':>8} {'examples/s':>10} "
          f"{'comm':>6} {'wait':>6} {'measured/bare':>14}")
    for model in args.models.split(","):
        steps = STEPS
        base = resolve(RunConfig(model=model, device=device, steps=10**9, val_every=10**9,
                                 profile=False, sample_every=SAMPLE_EVERY))
        one = statistics.median(single(base, args.blocks, steps))
        print(f"{model:<12} {1:>7} {'-':>9} {steps / one:>8.1f} "
              f"{steps * base.batch_size / one:>10.0f} {'-':>6} {'-':>6} {'-':>14}", flush=True)
        for sync in ("allreduce", "ps"):
            r = launched(base.replace(workers=n, sync=sync), args.blocks, steps)
            measured = statistics.median(r["times"]["measured"])
            bare = statistics.median(r["times"]["bare"])
            comm = max(x["comm_s"] / x["step_s"] for x in r["ranks"])
            wait = max(x["wait_s"] / x["step_s"] for x in r["ranks"])
            print(f"{model:<12} {n:>7} {sync:>9} {steps / measured:>8.1f} "
                  f"{steps * base.batch_size * n / measured:>10.0f} {comm:>6.0%} {wait:>6.0%} "
                  f"{bare / measured:>14.3f}", flush=True)


if __name__ == "__main__":
    main()
