"""The trainer process's entry point, for the dashboard's bridge.

This module is imported by the UI process (to name the spawn target), so it
imports torch only inside ``worker_main``, which runs in the child.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback

from lsml_tui.trainer import forkserver      # no torch there either


def on_parent_exit(action, parent: int | None = None, interval: float = 0.5) -> None:
    """Call `action` on a daemon thread once this process's parent (`parent`, by default the
    one it has now) is gone, even killed outright: we are then handed to another parent.
    How a child of the dashboard or of a sweep leaves no orphan."""
    parent = os.getppid() if parent is None else parent

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        action()
    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _redirect_output(path) -> None:
    """Point this process's stdout and stderr (file descriptors 1 and 2) at `path`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for target in (1, 2):
        os.dup2(fd, target)
    os.close(fd)


# What the trainer process imports before it trains, once, in the forkserver it forks from.
TRAINER_MODULES = ("torch", "torch._dynamo", "lsml_tui.trainer.loop",
                   "lsml_tui.trainer.store.writer")


def worker_main(config: dict, config_toml: str, commands, events, cwd: str | None = None) -> None:
    """Train one run: commands arrive on `commands`, event batches leave on `events`.

    ``None`` on `events` marks the end; a ``None`` command stops the forwarder. Forked
    from the dashboard's forkserver (its imports done), the process starts in `cwd`, the
    dashboard's directory now (the server's is the one it had when it started).
    """
    forkserver.detach()
    if cwd is not None:
        os.chdir(cwd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the UI owns Ctrl-C and sends Stop
    for sig in (signal.SIGTERM, signal.SIGHUP):     # a hang-up reaches us too (same process
        signal.signal(sig, signal.SIG_IGN)          # group): until the run can record it
    _redirect_output(os.devnull)                   # never write over the dashboard
    if config["workers"] > 1:                       # ranks to start: their imports run
        from lsml_tui.trainer.parallel.launch import warm_ranks    # beside this process's
        warm_ranks()
    from lsml_tui.trainer import commands as C
    from lsml_tui.trainer.config import RunConfig
    from lsml_tui.trainer.events import RunFailed
    from lsml_tui.trainer.loop import Trainer
    from lsml_tui.trainer.store.writer import RunStore

    cfg = RunConfig(**config)
    if cfg.workers > 1:
        return _launch_ranks(cfg, config_toml, commands, events)
    store = None
    try:
        store = RunStore.create(cfg.runs_dir, config, config_toml)
        _redirect_output(store.run_dir / "trainer.log")  # warnings, native crash messages
        trainer = Trainer(cfg, sink=events.put, store=store)
    except Exception as e:  # the run could not start: say why, then end
        events.put((RunFailed(0, f"{type(e).__name__}: {e}", traceback.format_exc()),))
        events.put(None)
        if store is not None:
            store.set_status("failed")
            store.close()
        return

    def forward() -> None:
        while (cmd := commands.get()) is not None:
            trainer.submit(cmd)

    def orphaned() -> None:
        """The dashboard died without stopping us (SIGKILL): end the run, leave no orphan."""
        events.cancel_join_thread()          # nobody reads the events any more
        trainer.submit(C.Stop())

    for sig in (signal.SIGTERM, signal.SIGHUP):  # a closed terminal or a kill: end cleanly
        signal.signal(sig, lambda *_: trainer.submit(C.Stop()))
    threading.Thread(target=forward, name="command-forwarder", daemon=True).start()
    on_parent_exit(orphaned)
    try:
        trainer.run()
    finally:
        store.close()
        events.put(None)


def _launch_ranks(cfg, config_toml: str, commands, events) -> None:
    """--workers N: this process becomes the elastic agent; rank 0 takes the bridge's queues
    (commands in, event batches out) and the other ranks follow it."""
    from pathlib import Path

    from lsml_tui.trainer.events import RunFailed, RunFinished
    from lsml_tui.trainer.parallel.launch import launch
    from lsml_tui.trainer.store.writer import new_run_id

    def orphaned() -> None:
        """The dashboard died: the agent's SIGTERM handler stops the ranks (rank 0 records)."""
        events.cancel_join_thread()
        os.kill(os.getpid(), signal.SIGTERM)

    on_parent_exit(orphaned)
    run_dir = Path(cfg.runs_dir) / new_run_id(cfg.model)
    try:
        summary = launch(cfg, run_dir, events, commands, signals="SIGTERM,SIGHUP")
    except Exception as e:  # the launcher itself failed: say why
        summary = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
    if summary.get("error"):                  # a rank died: rank 0 may not have said so
        events.put((RunFailed(summary.get("steps", 0), summary["error"], ""),
                    RunFinished(summary.get("steps", 0), "failed", summary)))
    events.put(None)
