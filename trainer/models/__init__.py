"""The four model families, built from a resolved run config and its task."""

from __future__ import annotations

import dataclasses

from torch import nn

from .. import specs
from .cnn import CNN
from .linear import Linear
from .mlp import MLP
from .norms import NormSlot, set_norm
from .rnn import RNN
from .transformer import Transformer

MODELS = {"mlp": MLP, "cnn": CNN, "rnn": RNN, "transformer": Transformer, "linear": Linear}

__all__ = ["MODELS", "NormSlot", "build_model", "model_config", "num_params", "set_norm"]


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
