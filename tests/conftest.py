import contextlib
import json
import subprocess
import sys

import psutil
import pytest


def run_cli(*args: str, cwd=None, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run the real `lsml-tui` entry point in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "lsml_tui.tui.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def run_json(*args: str, cwd=None) -> dict:
    """A headless run's --json summary (the last stdout line)."""
    proc = run_cli("--headless", "--json", "--no-progress", *args, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cli_here(*argv: str, cwd=None) -> str:
    """`lsml-tui ARGV` through the real `main` in this process; what it printed on stdout.
    Without the interpreter start that `run_cli` pays (seconds of importing torch a run):
    for the runs a test reads rather than the command line it proves."""
    import io
    import os

    from lsml_tui.tui.cli import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.chdir(cwd or os.getcwd()):
        status = main(list(argv))
    assert status == 0, out.getvalue()
    return out.getvalue()


def run_here(*args: str) -> dict:
    """`run_json` in this process (cli_here); one process only (ranks are started by the
    command line: use run_json)."""
    assert "--workers" not in args, "ranks are started by the command line: use run_json"
    return json.loads(cli_here("--headless", "--json", "--no-progress", *args)
                      .strip().splitlines()[-1])


@pytest.fixture
def runs_dir(tmp_path):
    return tmp_path / "runs"


def alive(procs) -> list[psutil.Process]:
    """Those still running (a zombie has exited: its parent or init reaps it)."""
    out = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
    return out


def drawn(cfg, events, panel_cls, read):
    """Run the real app on scripted `events` (ReplayBridge) and return `read(panel)` once drawn,
    or None when the app has no such panel."""
    import asyncio

    from lsml_tui.tui.app import LsmlApp
    from lsml_tui.tui.bridge import ReplayBridge

    async def main():
        app = LsmlApp(cfg, bridge_factory=lambda c: ReplayBridge(c, events))
        async with app.run_test(size=(140, 42)) as pilot:
            await pilot.pause(1.2)
            return read(app.query_one(panel_cls)) if app.query(panel_cls) else None
    return asyncio.run(main())
