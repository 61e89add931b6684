"""Optimizers and what changes their updates: building and live switching
(``optimizers``), learning-rate schedules (``schedules``), SVRG's variance-reduced
gradient (``svrg``) and weight averaging (``averaging``).

May import torch, ``lsml_tui.trainer.specs`` and ``lsml_tui.trainer.config``; nothing of
the loop, so the loop and its parts can all use them.
"""
