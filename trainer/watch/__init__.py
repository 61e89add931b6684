"""A user's own training loop recorded as a run (``lsml_tui.watch(model, optimizer)``):
the run and its optimizer-step hooks (``run``), its forward hooks and sampled meters
(``measure``), its arguments, directory and stored config (``setup``), the user's
clipping and the process's end seen from outside the loop (``seen``), and the commands a
watched loop takes (``control``), and the environment ``lsml-tui run`` starts a script
with (``env``, torch-free).

Records with what the built-in trainer records with (``lsml_tui.trainer.record``'s
``Recorder``, ``profiling``'s ``Profiler``, the run store, the system sampler), so every
reader works on a watched run unchanged. May import anything in ``lsml_tui.trainer`` and
``lsml_tui.profilers``, and torch; never the UI.
"""
