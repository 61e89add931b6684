"""Processes that start in milliseconds: a forkserver that has imported torch already.

A spawned process imports torch (and ``torch._dynamo``, which the first optimizer pulls
in) before it can train: about 3 s of CPU on a small machine. A forkserver does that once,
beside the starting process's own work, and forks each process from there: the dashboard's
trainer (a restart with ``r`` or ``m`` too) and the ranks of a data-parallel run.

No torch here: the dashboard imports this module.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
from multiprocessing import forkserver

# The server outlives a hang-up or a SIGTERM sent to the whole process group: whoever
# started it decides what its children do then, and it ends with that process.
OUTLIVES = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))
# LSML_TUI_START_METHOD=spawn starts every process afresh instead (what benchmarks/startup.py
# compares against, and a way out should a platform's forkserver misbehave).
ENV = "LSML_TUI_START_METHOD"


def method() -> str:
    """How processes start: "forkserver" where this platform has one (not Windows), or
    "spawn" where it has not or LSML_TUI_START_METHOD=spawn says so."""
    if os.environ.get(ENV) == "spawn" or "forkserver" not in mp.get_all_start_methods():
        return "spawn"
    return "forkserver"


def start(modules: tuple[str, ...], quiet: bool = False):
    """Start this process's forkserver with `modules` imported, if it is not running, and
    return the context that starts processes from it (the spawn context where method()
    says spawn). The imports run in the background.

    The server starts with OUTLIVES ignored (an ignored signal stays ignored across exec;
    the window here lasts one fork and exec); `quiet` points its stdout and stderr at
    /dev/null (a warning printed while torch loads must not land on the dashboard). It
    ends when this process does, even killed: it reads EOF on a pipe whose other end this
    process holds, as long as each child lets go of its copy (``detach``)."""
    if method() == "spawn":
        return mp.get_context("spawn")
    mp.set_forkserver_preload(list(modules))
    with contextlib.ExitStack() as undo:
        for sig in OUTLIVES:
            previous = signal.signal(sig, signal.SIG_IGN)
            undo.callback(signal.signal, sig, previous)
        if quiet:
            null = os.open(os.devnull, os.O_WRONLY)
            undo.callback(os.close, null)
            for fd in (1, 2):
                saved = os.dup(fd)
                undo.callback(os.close, saved)
                undo.callback(os.dup2, saved, fd)
                os.dup2(null, fd)
        forkserver.ensure_running()
    return mp.get_context("forkserver")


def detach() -> None:
    """In a process forked from the server: take back the signals it ignores, and close
    this process's copy of its starter's end of the server's lifeline.

    The server hands every child a copy (for children that start processes of their own).
    While a child holds one, the server outlives a starter that was killed, and the child,
    whose parent is the server, never learns that its starter is gone (torch's ranks ask
    the kernel for SIGINT when their parent dies; the trainer watches its parent). Closed,
    a killed starter ends the server, and the server's end reaches its children."""
    for sig in OUTLIVES:
        signal.signal(sig, signal.SIG_DFL)
    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if fd is not None:
        os.close(fd)
        server._forkserver_alive_fd = None
