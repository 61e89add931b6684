"""Measurements taken during a run and sampled: the theory of the linear family
(``theory``), sharpness (``sharpness``), the gradient noise scale (``noise``), the
finite blow-up of the loss (``divergence``) and the best validation loss with early
stopping (``generalization``). Each is called from the loop in one line and
turns a profiler's plain numbers (``lsml_tui.profilers``) into the trainer's events.

May import ``lsml_tui.profilers``, ``lsml_tui.trainer.events`` and torch; never the loop.
"""
