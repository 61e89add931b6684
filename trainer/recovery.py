"""Getting a run back after a fault: the last good state in memory, and out-of-memory.

A ``Snapshot`` is taken every ``--snapshot-every`` steps after a finite step
(weights and optimizer state, cloned on the device they live on: a copy costs
one pass over the parameters, nothing is written to disk). ``Rewind`` puts it
back; the step counter goes on, so the store stays a record of what happened.
"""

from __future__ import annotations

import torch

from lsml_tui.trainer.config import ConfigError
from lsml_tui.trainer.optim.optimizers import local, parts, set_weight_decay


def cloned(state):
    """A copy of an optimizer's state dict: tensors cloned, containers rebuilt, the rest
    shared (numbers, strings): a fifth of ``copy.deepcopy``'s cost (60 us against 330 for the
    MLP's Adam), taken every --snapshot-every steps."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {k: cloned(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(cloned(v) for v in state)
    return state


class Snapshot:
    def __init__(self, trainer):
        self.step = trainer.step
        self.norm = trainer.norm
        self.optimizer_name = trainer.optimizer_name
        self.model_state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        # this rank's own shard under --parallel zero1: every rank rewinds at the same step
        self.optimizer_state = cloned(local(trainer.optimizer).state_dict())

    def restore(self, trainer) -> tuple[str, dict]:
        """Put the weights (and the optimizer state, if it is the same optimizer) back."""
        if trainer.norm != self.norm:
            raise ConfigError(f"the last good state (step {self.step}) has norm {self.norm}, "
                              f"the model now has {trainer.norm}: switch the norm back first")
        trainer.model.load_state_dict(self.model_state)
        same = trainer.optimizer_name == self.optimizer_name
        if same:
            local(trainer.optimizer).load_state_dict(cloned(self.optimizer_state))
            set_weight_decay(trainer.optimizer, trainer.weight_decay)   # as set now, not then
        else:                                   # another optimizer's state means nothing here
            for sub in parts(trainer.optimizer):
                sub.state.clear()
        state = "optimizer state restored" if same else \
            f"{trainer.optimizer_name} state starts fresh (the snapshot was {self.optimizer_name})"
        return (f"rewound weights to step {self.step}; {state}",
                {"rewound_to": self.step, "optimizer_state": same})


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the RuntimeError text older builds and other devices raise."""
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(error, oom) or (isinstance(error, RuntimeError)
                                      and "out of memory" in str(error).lower())


def release_memory(trainer) -> None:
    """Drop what the failed step held: gradients, and the allocator's cached blocks."""
    trainer.optimizer.zero_grad(set_to_none=True)
    if trainer.device.type == "cuda":
        torch.cuda.empty_cache()


def oom_hint(cfg) -> str:
    smaller = [f"--batch-size {max(1, cfg.batch_size // 2)}"]
    if cfg.seq_len:
        smaller.append(f"--seq-len {max(2, cfg.seq_len // 2)}")
    if cfg.width:
        smaller.append(f"--width {max(1, cfg.width // 2)}")
    return "restart with less memory per step (m, or " + ", ".join(smaller) + ")"
