"""What the dashboard costs: first frame, training speed, and memory on long runs.

1. Time to first frame: ``lsml-tui`` started in a real terminal (tmux) until
   its status line is on screen (the trainer is still importing torch then).
2. Training speed with the dashboard attached against headless: the same run
   (``--steps N``) alternately headless and in the dashboard in tmux; each
   run's steps/s comes from its own run store. Goal: ratio >= 0.95.
3. UI memory while streaming a synthetic run (default two million steps)
   through every panel (no trainer): the traced Python heap at 100k, 250k,
   500k, 1M, 2M (3M, 4M) steps; then a second stream that empties the
   libraries' size-bounded caches at each mark, which leaves what the
   dashboard itself holds. Goal: flat.

    python benchmarks/ui.py [--model transformer] [--steps 300] [--repeats 2]
                            [--stream-steps 2000000] [--memory-only]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import psutil

from lsml_tui.trainer.config import RunConfig
from lsml_tui.trainer.validate import resolve
from lsml_tui.trainer.events import LayerStats, MemorySample, RunStarted, StepMetrics, SystemSample
from lsml_tui.trainer.store.reader import list_runs
from lsml_tui.tui.app import LsmlApp
from lsml_tui.tui.bridge import ReplayBridge

TMUX = shutil.which("tmux")
SOCKET = f"lsml-bench-{os.getpid()}"   # a tmux server of our own: nobody else's sessions
STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def tmux(*args: str) -> str:
    return subprocess.run([TMUX, "-L", SOCKET, *args], capture_output=True, text=True).stdout


def _exit_on_signal(sig, frame):
    """SIGTERM and SIGHUP unwind through every finally below, as Ctrl-C does."""
    raise SystemExit(128 + sig)


@contextlib.contextmanager
def uninterrupted():
    """Cleanup that a second Ctrl-C or a SIGTERM must not cut short: they wait until it is
    done (blocked, so they stay pending), then end the benchmark."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def running(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
    return out


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while running(procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    return running(procs)


def kill(procs: list[psutil.Process]) -> None:
    for p in running(procs):
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


@contextlib.contextmanager
def dashboard(session: str, size: tuple[int, int], command: str):
    """lsml-tui in a tmux session. However the block ends (done, an error, Ctrl-C,
    SIGTERM): q, then the session closed (the dashboard ends on the hang-up), then whatever
    of it is still running is killed. Nothing outlives the benchmark."""
    tmux("new-session", "-d", "-s", session, "-x", str(size[0]), "-y", str(size[1]), command)
    try:
        yield
    finally:
        with uninterrupted():
            pane = tmux("display-message", "-p", "-t", session, "#{pane_pid}").strip()
            procs = tree(int(pane)) if pane.isdigit() else []   # the trainer included
            tmux("send-keys", "-t", session, "q")
            if wait_gone(procs, 10):
                tmux("kill-session", "-t", session)
                kill(wait_gone(procs, 15))


def first_frame_seconds(runs_dir: str) -> float:
    t0 = time.perf_counter()
    with dashboard("first", (120, 40),
                   f"{sys.executable} -m lsml_tui.tui.cli --model mlp --runs-dir {runs_dir}"):
        while "norm" not in tmux("capture-pane", "-p", "-t", "first"):
            if time.perf_counter() - t0 > 60:
                raise RuntimeError("no frame within 60 s")
            time.sleep(0.01)
        return time.perf_counter() - t0


def headless_rate(args: list[str], runs_dir: str) -> float:
    proc = subprocess.Popen([sys.executable, "-m", "lsml_tui.tui.cli", "--headless",
                             "--no-progress", *args, "--runs-dir", runs_dir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate()
    finally:
        if proc.poll() is None:             # interrupted: on SIGTERM it records the run
            with uninterrupted():
                procs = tree(proc.pid)
                proc.terminate()
                kill(wait_gone(procs, 15))
                proc.wait()
    if proc.returncode:
        raise RuntimeError(f"headless run failed ({proc.returncode}): {err.strip()}")
    return list_runs(runs_dir)[-1].summary["steps_per_second"]


def dashboard_rate(args: list[str], runs_dir: str) -> float:
    with dashboard("rate", (160, 48),
                   f"{sys.executable} -m lsml_tui.tui.cli {' '.join(args)} "
                   f"--runs-dir {runs_dir}"):
        deadline = time.time() + 900
        while time.time() < deadline:
            runs = list_runs(runs_dir) if Path(runs_dir).exists() else []
            if runs and runs[-1].status == "finished":
                return runs[-1].summary["steps_per_second"]
            time.sleep(0.5)
        raise RuntimeError("the dashboard run did not finish")


class SyntheticBridge(ReplayBridge):
    """Stands in for the trainer: `per_tick` steps of events on every drain."""

    per_tick = 20_000

    def __init__(self, cfg):
        super().__init__(cfg, [RunStarted(0, "synthetic", "", {}, 0, "cpu")])
        self.step = 0

    def more(self) -> list:
        out = []
        for s in range(self.step, self.step + self.per_tick):
            out.append(StepMetrics(s, 2.0 / (1 + s / 1e4), 1e-3, 1.0 + (s % 97) / 97,
                                   s % 3 == 0, 1e4, s * 1e-4))
        s = self.step + self.per_tick - 1
        names = [f"blocks.{i}.weight" for i in range(8)]
        out += [LayerStats(s, names, [0.1] * 8, [1e-3] * 8, {n: 1024 for n in names}),
                MemorySample(s, 1000, 1000, 2000, 8192, None),
                SystemSample(s, {"cpu_percent": 50.0, "rss_bytes": 1e8, "gpus": []})]
        self.step += self.per_tick
        return out


MARKS = (100_000, 250_000, 500_000, 1_000_000, 2_000_000, 3_000_000, 4_000_000)


def clear_bounded_caches() -> int:
    """Empty every size-bounded cache the UI's libraries keep (functools.lru_cache with a
    maxsize, Textual's LRUCache and FIFOCache); return how many were cleared.

    What these hold is capped by construction, so it fills and then stops growing; the
    heap measured after clearing them is what the dashboard itself keeps.
    """
    from textual.cache import FIFOCache, LRUCache
    cleared = 0
    for obj in gc.get_objects():
        if isinstance(obj, functools._lru_cache_wrapper) and obj.cache_parameters()["maxsize"]:
            obj.cache_clear()
        elif isinstance(obj, (LRUCache, FIFOCache)):
            obj.clear()
        else:
            continue
        cleared += 1
    return cleared


def streaming_memory(steps_at=MARKS[:5], own: bool = False) -> dict[str, float]:
    """The traced heap at each mark; with `own`, after emptying the bounded caches there."""
    cfg = resolve(RunConfig(model="mlp", runs_dir=tempfile.mkdtemp()))
    figures: dict[str, float] = {}

    async def main() -> None:
        app = LsmlApp(cfg, bridge_factory=SyntheticBridge)
        async with app.run_test(size=(160, 48)) as pilot:
            tracemalloc.start()
            for mark in steps_at:
                while app.bridge.step < mark:   # the app's timer drains too; both count
                    t0 = time.perf_counter()
                    app.tick()
                    tick = time.perf_counter() - t0
                    await pilot.pause()
                if own:
                    clear_bounded_caches()
                    gc.collect()
                figures[f"memory_at_{mark}"] = tracemalloc.get_traced_memory()[0]
                figures[f"tick_seconds_at_{mark}"] = tick
            tracemalloc.stop()
    asyncio.run(main())
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="transformer")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--stream-steps", type=int, default=2_000_000,
                    help="synthetic steps for the memory figure (marks up to 4,000,000)")
    ap.add_argument("--memory-only", action="store_true")
    args = ap.parse_args()
    for sig in STOPS[1:]:
        signal.signal(sig, _exit_on_signal)
    try:
        measure(args)
    finally:
        if TMUX:
            tmux("kill-server")             # ours alone; nothing should be left on it


def measure(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if args.memory_only:
            pass
        elif TMUX:
            frames = [first_frame_seconds(f"{tmp}/first") for _ in range(3)]
            print(f"time to first frame: median {statistics.median(frames):.2f} s of {frames}")
            run = ["--model", args.model, "--steps", str(args.steps)]
            headless, dashboard = [], []
            for i in range(args.repeats):
                headless.append(headless_rate(run, f"{tmp}/h{i}"))
                dashboard.append(dashboard_rate(run, f"{tmp}/d{i}"))
            h, d = statistics.median(headless), statistics.median(dashboard)
            print(f"{args.model} x {args.steps} steps: headless {h:.1f} steps/s, "
                  f"dashboard {d:.1f} steps/s, ratio {d / h:.3f} (medians of {args.repeats})")
        else:
            print("tmux not found: skipping first frame and training speed")
    marks = [k for k in MARKS if k <= args.stream_steps]
    m = streaming_memory(marks)
    mems = "  ".join(f"{k // 1000}k: {m[f'memory_at_{k}'] / 2**20:.2f} MiB" for k in marks)
    print(f"UI memory streaming {marks[-1]:,} synthetic steps (traced Python heap): {mems}")
    o = streaming_memory(marks, own=True)
    own = "  ".join(f"{k // 1000}k: {o[f'memory_at_{k}'] / 2**20:.2f} MiB" for k in marks)
    print(f"  a second stream, bounded caches emptied at each mark (what the dashboard itself "
          f"keeps): {own}")
    ref = 1_000_000 if marks[-1] > 1_000_000 else marks[0]   # the series are full by 1M
    print(f"  own heap at {marks[-1]:,} / at {ref:,} steps: "
          f"{o[f'memory_at_{marks[-1]}'] / o[f'memory_at_{ref}']:.3f} (goal: about 1)")
    print(f"one tick (20,000 new steps into every panel, then redraw): "
          f"{m[f'tick_seconds_at_{marks[0]}'] * 1e3:.0f} ms at {marks[0]:,}, "
          f"{m[f'tick_seconds_at_{marks[-1]}'] * 1e3:.0f} ms at {marks[-1]:,}")


if __name__ == "__main__":
    main()
