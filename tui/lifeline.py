"""The dashboard's way out when its terminal goes away or a signal arrives, whatever the
event loop is doing.

Signal handlers run by the event loop are not enough: once the terminal is gone the loop
can block for good. Textual writes through a thread with a bounded queue; on a hung-up tty
that thread dies (EIO), and Textual's SIGCONT handler (the kernel sends SIGCONT with
SIGHUP) starts application mode again with a new writer that dies the same way. Thirty
writes later the main thread blocks in ``Queue.put``, in a redraw or in ``App._shutdown``,
and nothing scheduled on the loop runs again.

So signals are read on a thread of our own from ``signal.set_wakeup_fd`` (the C-level
handler writes each signal's number there, from whichever thread it interrupted), and
another thread notices the terminal hang up when no SIGHUP comes (a shell that ignores it,
a process in another session): ``tcgetattr`` fails with EIO, which a live terminal never
does. Either asks the app to quit as q does and arms a deadline: if the process is still
there ``DEADLINE`` seconds later, or at a second signal, this module stops the trainer
itself (Stop, killed after ``GRACE``), restores the terminal as far as it can, and exits
with 128 + the signal.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import termios
import threading
import time
from multiprocessing.process import BaseProcess

SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, n))
DEADLINE = 5.0      # a quit takes about a second; past this the loop is taken to be stuck
GRACE = 4.0         # for the trainer to record its run and exit before it is killed
POLL = 0.5          # how often the terminal is checked for a hang-up
# What Textual turns on, turned off: kitty keys, alternate screen, cursor, focus events,
# mouse reporting, bracketed paste, line wrap.
RESET = ("\x1b[<u\x1b[?1049l\x1b[?25h\x1b[?1004l\x1b[?1000l\x1b[?1003l\x1b[?1015l"
         "\x1b[?1006l\x1b[?1016l\x1b[?2004l\x1b[?7h")


def _daemon(target, *args, name: str = "lsml-lifeline") -> threading.Thread:
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    thread.start()
    return thread


def _fds() -> list[int]:
    """Textual's terminal: it reads stdin and writes stderr."""
    fds = []
    for f in (sys.__stdin__, sys.__stderr__):
        try:
            fds.append(f.fileno())
        except (AttributeError, ValueError, OSError):   # none, closed, or not a file
            pass
    return fds


def _noop(sig, frame) -> None:
    """Installed so that the C-level handler writes to the wakeup fd; the work is done on
    the lifeline's thread, which does not need the main thread to be free."""


class Lifeline:
    """One per process (signals are): `install` once, `attach` the running app."""

    def __init__(self):
        self.installed = False
        self.app = self.loop = None
        self.signalled: int | None = None     # the first signal; a hang-up counts as SIGHUP
        self._first = threading.Lock()        # taken once, never waited on: the first signal
        self._now = threading.Event()         # a second signal: end without waiting
        self._mode = None                     # the terminal's mode when installed

    def install(self) -> None:
        """Take SIGTERM, SIGHUP and SIGINT, and watch the terminal. From the main thread
        (the only one that may set handlers), before the app changes the terminal's mode
        where it can: that mode is what the deadline restores."""
        if self.installed:
            return
        self.installed = True
        ttys = [fd for fd in _fds() if os.isatty(fd)]
        if ttys:
            mode = termios.tcgetattr(ttys[0])
            if mode[3] & termios.ICANON:        # not yet raw: worth restoring
                self._mode = mode
        r, w = os.pipe()
        os.set_blocking(w, False)                # a signal handler must never block
        for sig in SIGNALS:
            signal.signal(sig, _noop)
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)   # nothing else here sets one
        _daemon(self._read_signals, r, name="lsml-signals")
        if ttys:
            _daemon(self._watch_terminal, ttys, name="lsml-tty-watch")

    def attach(self, app, loop) -> None:
        """Where quit requests go from now on; a signal that came while the app started is
        passed on now (we are on the loop's thread)."""
        self.app, self.loop = app, loop
        if self.signalled is not None:
            app.on_signal(self.signalled)

    def fire(self, sig: int, hang_up: bool = False) -> None:
        """Ask the app to quit and arm the deadline; a second signal ends at once."""
        if not self._first.acquire(blocking=False):
            if not hang_up:
                self._now.set()
            return
        self.signalled = sig
        app, loop = self.app, self.loop
        if app is not None:
            try:
                loop.call_soon_threadsafe(app.on_signal, sig)
            except RuntimeError:        # the loop is closed: the deadline ends what is left
                pass
        _daemon(self._deadline, name="lsml-deadline")

    def _read_signals(self, fd: int) -> None:
        while True:
            for sig in os.read(fd, 64):     # Textual's SIGWINCH, SIGCONT ... come here too
                if sig in SIGNALS:
                    self.fire(sig)

    def _watch_terminal(self, fds: list[int]) -> None:
        while True:
            time.sleep(POLL)
            for fd in fds:
                try:
                    termios.tcgetattr(fd)
                except termios.error as e:
                    if e.args[0] == errno.EIO:
                        self.fire(signal.SIGHUP, hang_up=True)
                        return

    def _deadline(self) -> None:
        self._now.wait(DEADLINE)
        self.end(self.signalled)

    def end(self, sig: int) -> None:
        """Stop the trainer, restore the terminal, exit: none of it on the event loop."""
        bridge = getattr(self.app, "bridge", None)
        if bridge is not None:
            _stop(bridge)
        _daemon(_release).join(1.0)
        _daemon(self._restore, sig).join(1.0)      # a stuck terminal must not keep us
        os._exit(128 + sig)

    def _restore(self, sig: int) -> None:
        driver = getattr(self.app, "_driver", None)
        mode = getattr(driver, "attrs_before", None) or self._mode   # as Textual found it
        run_dir = getattr(self.app, "run_dir", None)
        note = f"; the run is stored in {run_dir}" if run_dir else ""
        fds = _fds()
        try:
            if mode and fds:
                termios.tcsetattr(fds[0], termios.TCSANOW, mode)
            os.write(fds[-1], (RESET + f"\nlsml-tui: ended on "
                     f"{signal.Signals(sig).name}{note}\n").encode())
        except (OSError, termios.error, ValueError):
            pass                                    # the terminal is gone: nothing to restore


def _stop(bridge) -> None:
    """The trainer records its run and exits, or is killed after GRACE. A quit already
    stopping it makes `bridge.stop` return at once; then this waits for the process."""
    end = time.monotonic() + GRACE
    _daemon(bridge.stop, GRACE - 1).join(GRACE)
    proc = bridge.process
    if not isinstance(proc, BaseProcess):       # a replay or a followed run: nothing of ours
        return
    while proc.is_alive() and time.monotonic() < end:
        time.sleep(0.05)
    if proc.is_alive():
        proc.kill()


def _release() -> None:
    """What multiprocessing does at a normal exit and os._exit skips: close its queues and
    unlink their semaphores (its finalizers of priority >= 0; the queues' joins are below
    0). Else the resource tracker warns of leaked semaphores on the terminal."""
    from multiprocessing import util
    util._run_finalizers(0)


_line = Lifeline()
install, attach = _line.install, _line.attach
