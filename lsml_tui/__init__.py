"""lsml-tui: a terminal training dashboard and profiler.

The code lives in three subpackages installed under this namespace:
``lsml_tui.tui`` (from ``tui/``), ``lsml_tui.trainer`` (``trainer/``) and
``lsml_tui.profilers`` (``profilers/``). Dependencies flow one way:
tui -> trainer -> profilers; this top level imports none of them, so
``import lsml_tui`` is free.
"""

__version__ = "0.1.0"
