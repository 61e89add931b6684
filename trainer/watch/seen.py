"""What a watched loop does outside our hooks, seen from outside: the user's own gradient
clipping (``torch.nn.utils.clip_grad_norm_`` and ``clip_grads_with_norm_``, watched while
a run is open) and how the script ends (it returns, raises, or is sent SIGTERM by
``lsml-tui run``).

Only the functions looked up in ``torch.nn.utils`` at call time are seen, which is how
Lightning, accelerate (Hugging Face's Trainer) and most scripts call them; a name imported
with ``from torch.nn.utils import clip_grad_norm_`` before ``watch`` keeps the original,
and the run then records the norm after clipping (no clip events).
"""

from __future__ import annotations

import atexit
import signal
import sys
import threading

import torch

_open: list = []                # the watched runs not yet finished, oldest first
_original = {}                  # what we replaced, to put back


def _clip_grad_norm_(parameters, max_norm, *args, **kwargs):
    """``torch.nn.utils.clip_grad_norm_``, telling the open runs the norm it saw."""
    norm = _original["clip"](parameters, max_norm, *args, **kwargs)
    for run in _open:
        run.saw_clip(norm, float(max_norm))
    return norm


def _clip_grads_with_norm_(parameters, max_norm, total_norm, *args, **kwargs):
    """``torch.nn.utils.clip_grads_with_norm_`` (what accelerate, and so Hugging Face's
    Trainer, clips with, after ``get_total_norm``), telling the open runs the norm."""
    for run in _open:
        run.saw_clip(total_norm, float(max_norm))
    return _original["clip_with_norm"](parameters, max_norm, total_norm, *args, **kwargs)


def _excepthook(kind, value, tb):
    """An exception ends the script: its runs end ``failed`` (``interrupted`` for Ctrl-C or
    SIGTERM) with the error, before Python prints the traceback."""
    for run in list(_open):
        run.finish_after(value)
    _original["excepthook"](kind, value, tb)


def _at_exit() -> None:
    for run in list(_open):
        run.finish()


def _sigterm(signum, frame):
    raise KeyboardInterrupt     # the loop stops where it is; the run is recorded interrupted


def attach(run) -> None:
    """`run` is open: see its clipping and its end."""
    if not _original:
        _original["clip"] = torch.nn.utils.clip_grad_norm_
        torch.nn.utils.clip_grad_norm_ = _clip_grad_norm_
        _original["clip_with_norm"] = torch.nn.utils.clip_grads_with_norm_
        torch.nn.utils.clip_grads_with_norm_ = _clip_grads_with_norm_
        _original["excepthook"] = sys.excepthook
        sys.excepthook = _excepthook
        atexit.register(_at_exit)
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):
            _original["sigterm"] = signal.signal(signal.SIGTERM, _sigterm)
    _open.append(run)


def detach(run) -> None:
    """`run` has finished; with none open, everything we replaced is put back."""
    if run in _open:
        _open.remove(run)
    if _open or not _original:
        return
    if torch.nn.utils.clip_grad_norm_ is _clip_grad_norm_:
        torch.nn.utils.clip_grad_norm_ = _original["clip"]
    if torch.nn.utils.clip_grads_with_norm_ is _clip_grads_with_norm_:
        torch.nn.utils.clip_grads_with_norm_ = _original["clip_with_norm"]
    if sys.excepthook is _excepthook:
        sys.excepthook = _original["excepthook"]
    atexit.unregister(_at_exit)
    if "sigterm" in _original and threading.current_thread() is threading.main_thread() \
            and signal.getsignal(signal.SIGTERM) is _sigterm:
        signal.signal(signal.SIGTERM, _original["sigterm"])
    _original.clear()
