"""Run one training run in this process, with a progress bar on stderr."""

from __future__ import annotations

import json
import signal

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .config import RunConfig, to_toml
from .events import Diverged, RunFailed, StepMetrics
from .loop import Trainer, resolve_device
from .store import RunStore

EXIT_STATUS = {"finished": 0, "diverged": 1, "failed": 1, "interrupted": 130}


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_headless(cfg: RunConfig, json_out: bool = False, progress: bool = True) -> int:
    """Train `cfg` (resolved) to the end; return the process exit status.

    Raises ConfigError before anything is written if the device is not available.
    """
    resolve_device(cfg.device)
    store = RunStore.create(cfg.runs_dir, cfg.to_dict(), to_toml(cfg))
    console = Console(stderr=True)
    bar = Progress(TextColumn("[bold]{task.fields[run]}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:.0f} steps/s"),
                   TimeRemainingColumn(), console=console, disable=not progress,
                   refresh_per_second=5)
    task = bar.add_task("train", total=cfg.steps, run=store.run_id, loss=float("nan"), rate=0.0)

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

    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with bar:
            trainer = Trainer(cfg, sink=sink, store=store)
            summary = trainer.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
        store.close()
    if json_out:
        print(json.dumps(summary), flush=True)
    else:
        fmt = lambda v: "n/a" if v is None else f"{v:.4g}"  # noqa: E731
        console.print(f"{summary['status']}: {summary['steps']} steps, train loss "
                      f"{fmt(summary['initial_train_loss'])} -> {fmt(summary['final_train_loss'])}"
                      f", val {fmt(summary['final_val_loss'])}; stored in {summary['run_dir']}",
                      soft_wrap=True, highlight=False)
    return EXIT_STATUS.get(summary["status"], 1)
