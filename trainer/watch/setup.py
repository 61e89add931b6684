"""Before a watched run starts: its arguments checked (one line naming the bad value, and
nothing written), where it records, and the config it stores.

``lsml-tui run script.py`` names the run directory in the environment
(``LSML_TUI_RUN_DIR``), so the dashboard it opens finds the run the script records.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch

from lsml_tui.trainer.config import ConfigError
from lsml_tui.trainer.store.schema import DB_NAME
from lsml_tui.trainer.store.writer import new_run_id
from lsml_tui.trainer.validate import check_runs_dir
from lsml_tui.trainer.watch.env import ENV_PARENT, ENV_RUN_DIR
from lsml_tui.trainer.worker import on_parent_exit



_following: list = []            # the parent watched already (one watchdog per process)


def follow_parent() -> None:
    """Under ``lsml-tui run``: if lsml-tui dies (even killed outright), end as on SIGTERM,
    so the run is recorded interrupted and nothing is left running."""
    parent = os.environ.get(ENV_PARENT)
    if parent and parent.isdigit() and int(parent) == os.getppid() and not _following:
        _following.append(int(parent))
        on_parent_exit(lambda: os.kill(os.getpid(), signal.SIGTERM), parent=int(parent))


def callback_options(name, config, runs_dir, sample_every, profile) -> dict:
    """A framework callback's options, checked before it has a model: ``watch``'s
    keyword arguments, or TypeError or ValueError."""
    check_options(name, config, sample_every)
    return dict(name=name, config=config, runs_dir=runs_dir, sample_every=sample_every,
                profile=profile)


def check_options(name, config, sample_every) -> None:
    """The options a callback takes before it has a model: TypeError or ValueError."""
    if name is not None and not isinstance(name, str):
        raise TypeError(f"watch(name={name!r}): expected a string")
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"watch(config=...): expected a dict, got {type(config).__name__}")
    if isinstance(sample_every, bool) or not isinstance(sample_every, int) or sample_every < 1:
        raise ValueError(f"watch(sample_every={sample_every!r}): must be an integer >= 1")


def check_arguments(model, optimizer, name, config, runs_dir, sample_every) -> None:
    """Raise TypeError or ValueError on a bad argument; write nothing."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"watch(model=...): expected a torch.nn.Module, got "
                        f"{type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"watch(optimizer=...): expected a torch.optim.Optimizer, got "
                        f"{type(optimizer).__name__}")
    mine = {id(p) for p in model.parameters() if p.requires_grad}
    if not mine:
        raise ValueError(f"watch(model=...): {type(model).__name__} has no trainable parameters")
    if not any(id(p) in mine for g in optimizer.param_groups for p in g["params"]):
        raise ValueError(f"watch(optimizer=...): the {type(optimizer).__name__} holds none of "
                         f"{type(model).__name__}'s parameters; build it from model.parameters()")
    check_options(name, config, sample_every)
    if os.environ.get(ENV_RUN_DIR):
        return                                  # lsml-tui run chose the directory
    try:
        check_runs_dir(os.fspath(runs_dir))
    except ConfigError as e:
        raise ValueError(str(e).replace("--runs-dir", "watch(runs_dir=...):")) from None


def run_dir_for(runs_dir, label: str) -> Path:
    """``lsml-tui run``'s directory if it named one still free, else a new one."""
    chosen = os.environ.get(ENV_RUN_DIR)
    if chosen and not (Path(chosen) / DB_NAME).exists():
        return Path(chosen)
    base = Path(chosen).parent if chosen else Path(runs_dir)
    return base / new_run_id(label)


def stored_config(model, optimizer, name, config, sample_every, world: int = 1
                  ) -> tuple[dict, str]:
    """The run's config as the store keeps it, and as TOML: the fields every reader uses
    (model, optimizer, norm, lr, clip) plus the user's own under ``user``."""
    label = name or type(model).__name__
    user = json.loads(json.dumps(config or {}, default=str))
    stored = {"model": label, "optimizer": type(optimizer).__name__.lower(), "norm": "n/a",
              "lr": float(optimizer.param_groups[0]["lr"]), "clip": None,
              "sample_every": sample_every, "source": "watch",
              "script": os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else None,
              "module": type(model).__name__, "user": user,
              **({"workers": world, "sync": "watch"} if world > 1 else {})}
    lines = [f"# lsml_tui.watch run of {stored['script'] or 'an interactive session'}",
             f"model = {json.dumps(label)}", f"optimizer = {json.dumps(stored['optimizer'])}",
             f"lr = {stored['lr']!r}"]
    lines += [f"# {key} = {json.dumps(value)}" for key, value in user.items()]
    return stored, "\n".join(lines) + "\n"
