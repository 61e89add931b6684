"""What each --parallel mode costs and saves: steps/s, the bytes each rank holds and sends,
and the pipeline's bubble, each beside its formula.

For one model (default: the transformer, profiling on so each rank measures what it
holds), each mode trains --steps steps on --workers ranks started as ``--workers N``
starts them, the modes taking turns run by run (ddp, zero1, fsdp, tp, pp, ddp, ...) so
that machine noise hits them alike. Prints, per mode, the median steps/s and its ratio to
ddp, with the examples a second it trains (a data-parallel step takes N batches, a tp
or pp step one); then per rank the parameter, gradient and optimizer-state bytes it held at the last
sample beside ZeRO's formula (a whole replica of what the mode does not shard, total / N
of what it shards), the bytes it sent in a step and the time in those calls beside the
mode's communication formula, and under pp its bubble beside (p-1)/(m+p-1). On CPU the
ranks use gloo; on a CUDA machine pass --device cuda for NCCL.

    python benchmarks/parallel.py [--model transformer] [--workers 2] [--steps 200]
                                  [--repeats 3] [--device cpu] [--modes ddp,zero1,...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

MODES = ("ddp", "zero1", "fsdp", "tp", "pp")


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


def pct(x) -> str:
    return "" if x is None else f"{100 * x:.0f}%"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="transformer")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--modes", default=",".join(MODES))
    args = p.parse_args()
    modes = args.modes.split(",")
    rates: dict[str, list[float]] = {m: [] for m in modes}
    last: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as runs:
        for _ in range(args.repeats):
            for mode in modes:
                summary = run(mode, args, runs)
                rates[mode].append(summary["steps_per_second"])
                last[mode] = summary
    print(f"{args.model}, {args.workers} ranks on {args.device}, {args.steps} steps a run, "
          f"median of {args.repeats}")
    base = statistics.median(rates["ddp"])
    # a data-parallel step (ddp, zero1, fsdp) trains N batches, a tp or pp step one
    print(f"{'mode':6} {'steps/s':>9} {'vs ddp':>7} {'global batch':>12} {'examples/s':>10}")
    for mode in modes:
        rate, batch = statistics.median(rates[mode]), last[mode]["global_batch"]
        print(f"{mode:6} {rate:9.2f} {rate / base:7.3f} {batch:>12} {rate * batch:10.0f}")
    print(f"\n{'mode':6} {'rank':>4} {'params':>10} {'grads':>10} {'optimizer':>10} "
          f"{'formula p/g/o':>32} {'sent/step':>10} {'formula':>10} {'comm ms':>8} "
          f"{'bubble':>7} {'formula':>7}")
    for mode in modes:
        s = last[mode]
        predicted = "/".join(kib(s.get(f"{k}_predicted")).removesuffix(" KiB")
                             for k in ("param", "grad", "optimizer_state")) + " KiB"
        sent = s.get("comm_predicted") or [None] * len(s["ranks"])
        for r in s["ranks"]:
            seconds = sum(v["s"] for v in (r.get("collectives") or {}).values())
            bubble, formula = r.get("bubble_fraction"), s.get("bubble_predicted")
            print(f"{mode:6} {r['rank']:>4} {kib(r.get('param_bytes')):>10} "
                  f"{kib(r.get('grad_bytes')):>10} {kib(r.get('optimizer_state_bytes')):>10} "
                  f"{predicted:>32} {kib(r.get('comm_bytes')):>10} {kib(sent[r['rank']]):>10} "
                  f"{seconds * 1e3:8.2f} {pct(bubble):>7} {pct(formula):>7}")


if __name__ == "__main__":
    main()
