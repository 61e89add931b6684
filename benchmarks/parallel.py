"""What each --parallel mode costs and saves: steps/s and the bytes each rank holds.

For one model (default: the transformer, profiling on so each rank measures what it
holds), each mode trains --steps steps on --workers ranks started as ``--workers N``
starts them, the modes taking turns run by run (ddp, zero1, ddp, zero1, ...) so that
machine noise hits them alike. Prints, per mode, the median steps/s and its ratio to
ddp, then per rank the parameter, gradient and optimizer-state bytes it held at the
last sample beside ZeRO's formula (a whole replica under ddp, total / N for what zero1
shards). On CPU the ranks use gloo; on a CUDA machine pass --device cuda for NCCL.

    python benchmarks/parallel.py [--model transformer] [--workers 2] [--steps 200]
                                  [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

MODES = ("ddp", "zero1", "fsdp")


def run(mode: str, args, runs_dir: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "lsml_tui.tui.cli", "--headless", "--json", "--no-progress",
         "--model", args.model, "--workers", str(args.workers), "--device", args.device,
         "--parallel", mode, "--steps", str(args.steps), "--sample-every",
         str(max(1, args.steps // 4)), "--val-every", str(10 * args.steps),
         "--runs-dir", runs_dir], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{mode}: {proc.stderr.strip().splitlines()[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def kib(n) -> str:
    return "N/A" if n is None else f"{n / 1024:,.1f} KiB"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="transformer")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    rates: dict[str, list[float]] = {m: [] for m in MODES}
    last: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as runs:
        for _ in range(args.repeats):
            for mode in MODES:
                summary = run(mode, args, runs)
                rates[mode].append(summary["steps_per_second"])
                last[mode] = summary
    print(f"{args.model}, {args.workers} ranks on {args.device}, {args.steps} steps a run, "
          f"median of {args.repeats}")
    base = statistics.median(rates["ddp"])
    print(f"{'mode':6} {'steps/s':>9} {'vs ddp':>7}")
    for mode in MODES:
        rate = statistics.median(rates[mode])
        print(f"{mode:6} {rate:9.2f} {rate / base:7.3f}")
    print(f"\n{'mode':6} {'rank':>4} {'params':>12} {'grads':>12} {'optimizer':>12} "
          f"{'formula':>12}")
    for mode in MODES:
        s = last[mode]
        for r in s["ranks"]:
            print(f"{mode:6} {r['rank']:>4} {kib(r.get('param_bytes')):>12} "
                  f"{kib(r.get('grad_bytes')):>12} {kib(r.get('optimizer_state_bytes')):>12} "
                  f"{kib(s.get('optimizer_state_predicted')):>12}")


if __name__ == "__main__":
    main()
