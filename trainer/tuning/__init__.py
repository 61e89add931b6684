"""Choosing hyper-parameters: the learning-rate range test (``lr_find``) and Optuna
sweeps (``space``: the searched flags; ``study``: the study, its sampler and pruner;
``sweep``: the objective, each trial's run and the worker processes).

May import anything in ``lsml_tui.trainer`` (a trial is an ordinary run) and optuna;
torch only when a trial or a range test trains.
"""
