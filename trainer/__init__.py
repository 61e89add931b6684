"""Everything that trains: the loop and the pieces one step calls, one folder per idea.

Here: the run config and its checks (``config``, ``validate``, ``specs``), the commands a
run takes and the events it emits (``commands``, ``events``), the loop (``loop``: one
step top to bottom; ``record``, ``control``, ``faults``, ``guard``, ``recovery``,
``precision``, ``profiling``, ``device``, ``data``), and how a run is started
(``headless``, ``worker``). Folders: ``models/``, ``optim/``, ``watches/``,
``parallel/``, ``store/``, ``tuning/``.

May import ``lsml_tui.profilers``, torch and the standard library; never ``lsml_tui.tui``
or textual. Modules the UI process needs (``config``, ``validate``, ``specs``,
``commands``, ``events``, ``store/``) never import torch.
"""
