"""``lsml-tui lr-find`` and ``lsml-tui sweep``: their command lines and what they print
and write (``lrfind``, ``sweep``, ``results``), and the dashboard's lr-find screen
(``lrfind_screen``). Each reads ``lsml_tui.trainer.tuning``; trials and range tests run
in child processes or after the input is checked.

May import ``lsml_tui.trainer``, ``lsml_tui.tui.flags``, ``lsml_tui.tui.report`` and
``lsml_tui.tui.panels``; never ``lsml_tui.tui.app`` or ``cli`` (which reach these by name).
"""
