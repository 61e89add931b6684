"""Run one training run in this process, with a progress bar on stderr."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from lsml_tui.trainer.config import ConfigError, RunConfig, to_toml
from lsml_tui.trainer.events import Diverged, RunFailed, StepMetrics
from lsml_tui.trainer.loop import Trainer
from lsml_tui.trainer.store.writer import RunStore, new_run_id

EXIT_STATUS = {"finished": 0, "diverged": 1, "failed": 1, "interrupted": 130}


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_headless(cfg: RunConfig, json_out: bool = False, progress: bool = True) -> int:
    """Train `cfg` (resolved) to the end; return the process exit status.

    One process; or, with --workers N, N ranks started here by torch's elastic launcher;
    or, started by torchrun, this process's rank of torchrun's group (only rank 0 prints).
    Raises ConfigError before anything is written if the device is not available.
    """
    from lsml_tui.trainer.parallel.launch import RankFailed, preflight, run_rank
    from lsml_tui.trainer.parallel.world import world_from_env
    preflight(cfg)
    world = world_from_env()
    joined = world is not None and world.size > 1
    if joined and cfg.workers not in (1, world.size):
        raise ConfigError(f"--workers {cfg.workers} under torchrun, whose group has "
                          f"{world.size} ranks: leave --workers out")
    if joined and world.rank != 0:               # torchrun's other ranks: train, say nothing
        try:
            run_rank(cfg.to_dict(), to_toml(cfg), None)
        except RankFailed:
            return 1
        return 0
    run_dir = Path(cfg.runs_dir) / new_run_id(cfg.model)
    console = Console(stderr=True)
    bar = Progress(TextColumn("[bold]{task.fields[run]}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]:.4g}  {task.fields[rate]:.0f} steps/s"),
                   TimeRemainingColumn(), console=console, disable=not progress,
                   refresh_per_second=5)
    task = bar.add_task("train", total=cfg.steps, run=run_dir.name, loss=float("nan"), rate=0.0)

    def sink(batch: tuple) -> None:
        steps = [e for e in batch if isinstance(e, StepMetrics)]
        if steps:
            rate = len(steps) / max(1e-9, steps[-1].time - steps[0].time) if len(steps) > 1 else 0.0
            bar.update(task, completed=steps[-1].step + 1, loss=steps[-1].loss, rate=rate)
        for e in batch:                     # why a run ended early, in words, above the bar
            if isinstance(e, (Diverged, RunFailed)):
                text = e.message if isinstance(e, Diverged) else f"failed at step {e.step}: {e.error}"
                console.print(text,
                              style="bold red", soft_wrap=True, highlight=False, markup=False)

    with bar:
        if joined:
            try:
                summary = run_rank(cfg.to_dict(), to_toml(cfg), str(run_dir), sink)
            except RankFailed as e:             # the store has the summary and the traceback
                summary = {"run_dir": str(run_dir), "status": "failed", "error": str(e)}
        elif cfg.workers > 1:
            summary = _launched(cfg, run_dir, sink)
        else:
            summary = _single(cfg, run_dir, sink)
    if summary.get("error"):                    # the launcher's word: which rank failed, how
        console.print(summary["error"], style="bold red", soft_wrap=True, highlight=False,
                      markup=False)
    if json_out:
        print(json.dumps(summary), flush=True)
    else:
        fmt = lambda v: "n/a" if v is None else f"{v:.4g}"  # noqa: E731
        console.print(f"{summary['status']}: {summary.get('steps', 0)} steps, train loss "
                      f"{fmt(summary.get('initial_train_loss'))} -> "
                      f"{fmt(summary.get('final_train_loss'))}, val "
                      f"{fmt(summary.get('final_val_loss'))}; stored in {summary['run_dir']}",
                      soft_wrap=True, highlight=False)
    return EXIT_STATUS.get(summary["status"], 1)


def _single(cfg: RunConfig, run_dir: Path, sink) -> dict:
    store = RunStore.create(cfg.runs_dir, cfg.to_dict(), to_toml(cfg), run_dir=run_dir)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return Trainer(cfg, sink=sink, store=store).run()
    finally:
        signal.signal(signal.SIGTERM, previous)
        store.close()


def _launched(cfg: RunConfig, run_dir: Path, sink) -> dict:
    """N ranks started here; rank 0's event batches come back on a queue for the bar."""
    import multiprocessing as mp

    from lsml_tui.trainer.parallel.launch import launch
    events = mp.get_context("spawn").Queue()

    def pump() -> None:
        while (batch := events.get()) is not None:
            sink(batch)
    reader = threading.Thread(target=pump, name="rank0-events", daemon=True)
    reader.start()
    try:
        return launch(cfg, run_dir, events)
    finally:
        events.put(None)
        reader.join(timeout=5)
