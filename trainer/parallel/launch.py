"""Starting N data-parallel ranks on this machine with torch's elastic launcher (what
``torchrun --standalone`` does), and the body every rank runs, ours or torchrun's.

Rank 0 is the recorder: it creates the run store at the run directory the launcher
chose, takes commands and emits events. The launcher turns a rank that died into a
``failed`` run naming it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import traceback
from pathlib import Path

from lsml_tui.trainer import commands as C
from lsml_tui.trainer import forkserver
from lsml_tui.trainer.config import ConfigError, RunConfig, to_toml
from lsml_tui.trainer.store.writer import RunStore, mark_failed, new_run_id
from lsml_tui.trainer.validate import check_cores


def preflight(cfg: RunConfig) -> None:
    """Refuse what this machine lacks before anything starts: the device, the math mode,
    a GPU per CUDA rank (imports torch; raises ConfigError)."""
    from lsml_tui.trainer.device import resolve_device
    from lsml_tui.trainer.precision import resolve_mode
    resolve_mode(cfg.precision, resolve_device(cfg.device))
    check_workers(cfg)


def check_workers(cfg: RunConfig) -> None:
    """Refuse more CUDA ranks than GPUs before anything starts (imports torch)."""
    if cfg.workers < 2:
        return
    import torch

    from lsml_tui.trainer.device import resolve_device
    device = resolve_device(cfg.device)
    gpus = torch.cuda.device_count()
    if device.type == "cuda" and cfg.workers > gpus:
        raise ConfigError(f"--workers {cfg.workers} on CUDA needs one GPU per rank; this "
                          f"machine has {gpus}: use --workers {gpus} or fewer, or --device cpu "
                          f"for gloo ranks")
    if device.type == "mps":
        raise ConfigError("--workers > 1 is not available on mps; use --device cpu")
    if device.type == "cpu":                    # --device auto on a machine without a GPU
        check_cores(cfg.workers, cfg.oversubscribe)


# What every rank imports before it trains, once, in the forkserver the ranks fork from.
RANK_MODULES = ("torch", "torch._dynamo", "lsml_tui.trainer.loop",
                "lsml_tui.trainer.parallel.modes", "lsml_tui.trainer.parallel.launch")


# A rank that failed because a peer vanished says so in these words; the launcher names
# the rank that failed first for a reason of its own.
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Timed out waiting")
PEER_GONE_GRACE = 2.0       # seconds such a rank waits before it ends


def warm_ranks():
    """Start the forkserver the ranks fork from (imports beside this process's own start);
    the context to start them with."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")   # ranks set their own thread counts
    return forkserver.start(RANK_MODULES)


def rank_main(config: dict, config_toml: str, run_dir: str | None, events=None,
              commands=None, handled: str = "SIGTERM") -> dict | None:
    """The launcher's entry point: rank 0's events go to the `events` queue; `handled`
    names the signals on which the launcher shuts down (its signals_to_handle)."""
    forkserver.detach()                             # as a spawned rank would start
    return run_rank(config, config_toml, run_dir, events.put if events is not None else None,
                    commands, launcher_signals={getattr(signal, name)
                                                for name in handled.split(",")})


def run_rank(config: dict, config_toml: str, run_dir: str | None, sink=None,
             commands=None, launcher_signals: set[int] = frozenset()) -> dict | None:
    """One rank of a data-parallel run: join the group, train, return rank 0's summary.

    `launcher_signals`: started by our elastic launcher (rank_main), which shuts down on
    these signals; torchrun's ranks and tests pass none."""
    from lsml_tui.trainer.loop import Trainer
    from lsml_tui.trainer.parallel.modes import join

    cfg = RunConfig(**config)
    dp = join(cfg)
    store = None
    signalled: list[int] = []                   # signals this rank received
    if dp.recorder:
        run_dir = run_dir or str(Path(cfg.runs_dir) / new_run_id(cfg.model))
        store = RunStore.create(cfg.runs_dir, config, config_toml, run_dir=run_dir)
    else:                                       # rank 0 alone decides when everyone stops
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda signum, _: signalled.append(signum))
    trainer = Trainer(cfg, sink=sink if dp.recorder else None, store=store, dp=dp)
    if dp.recorder:
        def stop(signum, _):
            signalled.append(signum)
            trainer.submit(C.Stop())
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, stop)
        if commands is not None:
            threading.Thread(target=_forward, args=(commands, trainer), daemon=True).start()
    summary = None
    try:
        summary = trainer.run()
        if summary["status"] == "failed":   # end now: the peers see the closed connection
            raise RankFailed(trainer.error)
        return summary if dp.recorder else None
    finally:
        # Training is over: the launcher may now end this process with SIGTERM (it does when
        # another rank failed, after this one handed back its summary), so let it.
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        if store is not None:
            store.close()
        if summary is not None and summary["status"] != "failed":
            dp.close()          # with a peer gone, tearing the group down can block: skip it
        elif not signalled and trainer.error and any(p in trainer.error for p in _PEER_GONE):
            # A peer vanished (killed, crashed) and the launcher has not said it saw: give it
            # time to see that rank end first, so the run names it, not this one (a forked
            # rank exits in milliseconds). Its SIGTERM ends the wait.
            time.sleep(PEER_GONE_GRACE)
        if launcher_signals.intersection(signalled):    # the launcher is shutting down and
            os._exit(0)         # will never read this rank's return value; torch's wrapper
                                # would wait for it until SIGKILL: the run is recorded, end


class RankFailed(RuntimeError):
    """This rank's run failed (its store, if rank 0, says how); the launcher ends the rest."""


def _first_cause(failures: dict) -> tuple[int, str]:
    """(rank, why) of the failure that caused the others."""
    def why(f) -> str:
        text = f.message.get("message", str(f.message)) if isinstance(f.message, dict) \
            else f.message
        return text or f"exit code {f.exitcode}"
    rank, f = min(failures.items(), key=lambda kv: (any(p in why(kv[1]) for p in _PEER_GONE),
                                                      kv[1].timestamp, kv[0]))
    return rank, why(f)


def _forward(commands, trainer) -> None:
    while (cmd := commands.get()) is not None:
        trainer.submit(cmd)


def launch(cfg: RunConfig, run_dir: Path, events=None, commands=None,
           signals: str = "SIGTERM,SIGINT,SIGHUP,SIGQUIT") -> dict:
    """Train `cfg` on cfg.workers ranks here; return rank 0's summary. A rank that fails
    (an exception, a kill, a lost peer) ends every rank; the run is recorded ``failed``
    with the rank named, and the summary says so."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    logs = Path(run_dir) / "ranks"                  # each rank's stdout and stderr
    spec = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=cfg.workers,
                        run_id=run_dir.name, rdzv_backend="c10d", rdzv_endpoint="localhost:0",
                        max_restarts=0, start_method=forkserver.method(), monitor_interval=0.1,
                        signals_to_handle=signals, shutdown_timeout=int(cfg.dist_timeout) + 5,
                        logs_specs=DefaultLogsSpecs(log_dir=str(logs), redirects=Std.ALL))
    warm_ranks()                                    # if not already started
    for name in ("torch.distributed.elastic", "torch.multiprocessing"):    # we say it once
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        results = elastic_launch(spec, rank_main)(cfg.to_dict(), to_toml(cfg), str(run_dir),
                                                  events, commands, signals)
        return results[0]
    except ChildFailedError as e:
        rank, why = _first_cause(e.failures)
        message = f"rank {rank} failed ({why.removeprefix('RankFailed: ')}); every rank " \
                  f"was stopped"
        summary = mark_failed(run_dir, message, traceback.format_exc())
        return summary
