"""How long a process takes to start training: forked from a forkserver that has imported
torch (what lsml-tui does) against spawned afresh (LSML_TUI_START_METHOD=spawn).

Three measurements, each with both start methods, taking turns repeat by repeat so that
machine noise hits them alike:

  ranks      `lsml-tui --headless --workers 2` for one step of a small MLP, command to
             exit: the CLI, two ranks, their process group, one step, the summary
  trainer    a dashboard's first trainer: TrainerBridge.start() to its first step metric,
             in a fresh process (the dashboard starts the forkserver as it opens; here
             nothing overlaps it, so this is the start alone)
  restart    a second trainer in that process (r, m, or a rewound model's new run)

Prints the median seconds of each and the ratio spawn / forkserver (above 1: forking is
faster).

    python benchmarks/startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

SMALL = ["--model", "mlp", "--layers", "1", "--width", "16", "--device", "cpu"]
METHODS = ("forkserver", "spawn")


def env_for(method: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "LSML_TUI_START_METHOD"}
    if method == "spawn":
        env["LSML_TUI_START_METHOD"] = "spawn"
    return env


def ranks(method: str, runs_dir: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lsml_tui.tui.cli", "--headless", "--no-progress",
                    *SMALL, "--workers", "2", "--steps", "1", "--no-profile",
                    "--runs-dir", runs_dir], env=env_for(method), check=True,
                   capture_output=True)
    return time.perf_counter() - start


def trainers(method: str, runs_dir: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", runs_dir], env=env_for(method),
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def child(runs_dir: str) -> None:
    """Two trainers one after the other, as a dashboard starts them; seconds to each's
    first step metric."""
    from lsml_tui.trainer.config import RunConfig
    from lsml_tui.trainer.events import StepMetrics
    from lsml_tui.trainer.validate import resolve
    from lsml_tui.tui.bridge import TrainerBridge, prepare_processes

    cfg = resolve(RunConfig(model="mlp", layers=1, width=16, device="cpu", steps=10**6,
                            runs_dir=runs_dir))
    times = []
    for i in range(2):
        start = time.perf_counter()
        if i == 0:
            prepare_processes()                 # what the dashboard does as it opens
        bridge = TrainerBridge(cfg).start()
        while not any(isinstance(e, StepMetrics) for e in bridge.drain()):
            time.sleep(0.005)
        times.append(time.perf_counter() - start)
        bridge.stop()
    print(json.dumps({"trainer": times[0], "restart": times[1]}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--child", metavar="RUNS_DIR", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child)
    seconds = {(what, m): [] for what in ("ranks", "trainer", "restart") for m in METHODS}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for m in METHODS:
                seconds["ranks", m].append(ranks(m, tmp))
                for what, s in trainers(m, tmp).items():
                    seconds[what, m].append(s)
    print(f"{os.cpu_count()} CPUs, {args.repeats} repeats, median seconds")
    print(f"{'':10}{'forkserver':>12}{'spawn':>10}{'spawn/fork':>12}")
    for what in ("ranks", "trainer", "restart"):
        fork, spawn = (statistics.median(seconds[what, m]) for m in METHODS)
        print(f"{what:10}{fork:12.2f}{spawn:10.2f}{spawn / fork:12.2f}")


if __name__ == "__main__":
    main()
