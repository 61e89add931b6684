"""``lsml-tui run script.py [args]``: your own training script as the trainer process.

The script runs as it would alone (``python script.py args``), with its output kept in
``output.log`` of its run directory and the directory named in its environment, where
its ``lsml_tui.watch(...)`` records. Once the run exists the dashboard follows it
through the store and commands it there, as ``lsml-tui open`` does; ``q`` (or closing
the terminal) ends the script, recorded ``interrupted``. ``--headless`` prints a progress
line instead. Bad input is refused before the script starts: one line, exit status 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from lsml_tui.trainer.config import ConfigError
from lsml_tui.trainer.store.reader import open_run
from lsml_tui.trainer.store.schema import DB_NAME
from lsml_tui.trainer.store.writer import new_run_id
from lsml_tui.trainer.validate import check_runs_dir
from lsml_tui.trainer.watch.env import ENV_PARENT, ENV_RUN_DIR
from lsml_tui.tui.follow import end_script

OUTPUT = "output.log"
STARTUP = 300.0         # seconds a script may take to reach lsml_tui.watch (imports, data)


def parser(prog: str, make) -> argparse.ArgumentParser:
    p = make(prog=prog, description="Run your own training script (one that calls "
             "lsml_tui.watch(model, optimizer)) under the dashboard: its panels fill as it "
             "trains, and pause, step, lr, trace, export and stop reach it.")
    p.add_argument("--headless", action="store_true", help="no dashboard: a progress line on "
                   "stderr")
    p.add_argument("--runs-dir", default="runs", metavar="DIR", help="where the run is "
                   "recorded (default: runs)")
    p.add_argument("script", metavar="SCRIPT", help="the Python script to run")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="its arguments")
    return p


def main(argv: list[str], prog: str, make) -> int:
    args = parser(prog, make).parse_args(argv)
    script = Path(args.script)
    if not script.is_file() or not os.access(script, os.R_OK):
        raise ConfigError(f"script {args.script!r} is not a readable file")
    check_runs_dir(args.runs_dir)
    run_dir = Path(args.runs_dir) / new_run_id(script.stem)
    run_dir.mkdir(parents=True)
    proc = start(script, args.args, run_dir, own_session=not args.headless)
    print(f"{prog}: running {script} (output in {run_dir / OUTPUT}) …", file=sys.stderr,
          flush=True)
    try:
        if not wait_for_run(run_dir, proc):
            tail = (run_dir / OUTPUT).read_text(errors="replace").splitlines()[-15:]
            print("\n".join(tail), file=sys.stderr)
            print(f"{prog}: {script} ended (exit status {proc.returncode}) before it called "
                  f"lsml_tui.watch(model, optimizer); nothing was recorded", file=sys.stderr)
            return proc.returncode or 1
        if args.headless:
            return follow_headless(run_dir, proc, script.name)
        return run_dashboard(run_dir, proc, script.name)
    finally:
        end_script(proc)


def start(script: Path, args: list[str], run_dir: Path, own_session: bool) -> subprocess.Popen:
    """`script` with its output into the run directory and the run directory in its
    environment. Under the dashboard it gets a session of its own: the terminal's signals
    are the dashboard's to handle (it ends the script itself)."""
    env = {**os.environ, ENV_RUN_DIR: str(run_dir.resolve()), ENV_PARENT: str(os.getpid()),
           "PYTHONUNBUFFERED": "1"}
    with open(run_dir / OUTPUT, "ab") as out:
        return subprocess.Popen([sys.executable, str(script), *args], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=own_session)


def wait_for_run(run_dir: Path, proc: subprocess.Popen) -> bool:
    """True once the script's run is in its store; False if the script ended first."""
    deadline = time.monotonic() + STARTUP
    while True:
        if (run_dir / DB_NAME).exists():
            try:
                with open_run(run_dir) as r:
                    r.info()
                return True
            except (sqlite3.Error, TypeError):  # made, not yet committed
                pass
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def exit_status(code: int | None) -> int:
    return 128 - code if code is not None and code < 0 else (code or 0)


def run_dashboard(run_dir: Path, proc: subprocess.Popen, name: str) -> int:
    from lsml_tui.tui import lifeline
    from lsml_tui.tui.app import LsmlApp
    app = LsmlApp.run_script(run_dir, proc, name)
    lifeline.install()
    try:
        app.run()
    finally:
        if app.bridge is not None:
            app.bridge.stop()
    with open_run(run_dir) as r:                # how the script's run ended, as stored
        status = r.info().status
    print(f"lsml-tui: {name} {status}; stored in {run_dir}", file=sys.stderr, flush=True)
    if app.return_signal:
        return 128 + app.return_signal
    # q ended the script: a quit, 0 as the dashboard's own; else the script's own status
    return 0 if app.bridge is not None and app.bridge.ended_script else exit_status(proc.poll())


def follow_headless(run_dir: Path, proc: subprocess.Popen, name: str) -> int:
    """A progress line from the store until the script ends (it may go on after its run
    has finished); the script's exit status."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn
    console = Console(stderr=True)
    bar = Progress(TextColumn(f"[bold]{name}"), BarColumn(), TextColumn(
        "step {task.completed:,.0f}  loss {task.fields[loss]:.4g}  {task.fields[status]}"),
        console=console, refresh_per_second=4)
    task = bar.add_task("run", total=None, loss=float("nan"), status="running")
    previous = signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))
    try:
        with bar:
            while True:
                ended = proc.poll() is not None
                with open_run(run_dir) as r:
                    info = r.info()
                bar.update(task, completed=info.steps, status=info.status,
                           loss=info.final_loss if info.final_loss is not None else float("nan"))
                if ended:                       # the script's end, not its run's
                    break
                time.sleep(0.25)
    except KeyboardInterrupt:                   # Ctrl-C reached the script too: it records
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    code = end_script(proc)
    with open_run(run_dir) as r:
        info = r.info()
    console.print(f"{name} {info.status}: {info.steps} steps, final loss "
                  f"{'n/a' if info.final_loss is None else f'{info.final_loss:.4g}'}; stored "
                  f"in {run_dir}", highlight=False, soft_wrap=True)
    return exit_status(code)
