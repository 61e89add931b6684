"""Everything a person sees: the command line (``cli``, ``flags``, ``history``: report,
runs, open), the dashboard (``app``, ``actions``, ``bridge`` to the trainer process,
``replay``, ``follow``, ``lifeline``, ``screens``, ``series``, ``format``), and folders
``panels/`` (one file per panel), ``report/`` (HTML, Markdown, JSON, CSV, TensorBoard)
and ``tuning/`` (lr-find and sweep: their commands and screens).

May import ``lsml_tui.trainer`` (never its torch modules at start-up: the dashboard starts
without torch), ``lsml_tui.profilers``' torch-free helpers, textual, rich and plotext.
"""
