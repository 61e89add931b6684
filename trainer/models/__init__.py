"""The model families (MLP, random features, CNN, RNN, transformer, linear), one file each,
their normalization slots and dropout; built from a resolved run config and its task.

May import torch and ``lsml_tui.trainer.specs``; nothing else of the trainer.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from lsml_tui.trainer import specs
from lsml_tui.trainer.models.cnn import CNN
from lsml_tui.trainer.models.linear import Linear
from lsml_tui.trainer.models.mlp import MLP
from lsml_tui.trainer.models.norms import NormSlot, set_norm
from lsml_tui.trainer.models.rff import RFF
from lsml_tui.trainer.models.rnn import RNN
from lsml_tui.trainer.models.transformer import Transformer

MODELS = {"mlp": MLP, "rff": RFF, "cnn": CNN, "rnn": RNN, "transformer": Transformer, "linear": Linear}

__all__ = ["MODELS", "NormSlot", "build_model", "model_config", "num_params", "set_dropout",
           "set_norm"]


def model_config(cfg, task_fields: dict):
    """The model family's config from the run config's fields plus the task's (vocab, classes)."""
    cls = specs.MODEL_CONFIGS[cfg.model]
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in cfg.to_dict().items() if k in names and v is not None}
    values.update({k: v for k, v in task_fields.items() if k in names})
    return cls(**values)


def build_model(cfg, task_fields: dict) -> nn.Module:
    return MODELS[cfg.model](model_config(cfg, task_fields))


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def set_dropout(model: nn.Module, p: float) -> int:
    """Set every dropout's probability to `p` (live, between two steps); returns how many."""
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    for m in drops:
        m.p = p
    return len(drops)
