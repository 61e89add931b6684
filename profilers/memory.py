"""Memory that training holds: activations saved for backward, and the breakdown.

Saved activations are measured with ``torch.autograd.graph.saved_tensors_hooks``:
the bytes of every tensor autograd keeps for backward, counted once per
storage (q, k and v as views of one QKV output count once), parameters and
buffers excluded, attributed to the innermost module running when it was saved
(``(loss)`` outside every module).
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn
from torch.nn.modules import module as module_hooks

OUTSIDE = "(loss)"


def local_part(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of a sharded tensor (a DTensor's local shard); a plain tensor itself."""
    to_local = getattr(t, "to_local", None)
    return to_local() if to_local is not None else t


class SavedActivationMeter:
    """``with SavedActivationMeter(model) as m: loss = ...`` then read ``m.by_module``, ``m.total``."""

    def __init__(self, model: nn.Module):
        self._names = {id(m): name for name, m in model.named_modules() if name}
        self._excluded = {local_part(t).untyped_storage().data_ptr()
                          for t in [*model.parameters(), *model.buffers()]}
        self._stack: list[str] = []
        self._seen: set[int] = set()
        self.by_module: dict[str, int] = defaultdict(int)

    @property
    def total(self) -> int:
        return sum(self.by_module.values())

    @property
    def count(self) -> int:
        """Storages counted."""
        return len(self._seen)

    def _pre(self, module, args):
        self._stack.append(self._names.get(id(module), ""))

    def _post(self, module, args, output):
        if self._stack:         # a module entered before the meter was (a watched loop's)
            self._stack.pop()

    def _pack(self, t: torch.Tensor):
        try:                        # a DTensor's own shard (tensor parallel)
            storage = local_part(t).untyped_storage()
            key = storage.data_ptr()
        except (RuntimeError, NotImplementedError):
            return t  # a tensor without plain storage (sparse, nested): not counted
        if key not in self._excluded and key not in self._seen:
            self._seen.add(key)
            owner = next((n for n in reversed(self._stack) if n), OUTSIDE)
            self.by_module[owner] += storage.nbytes()
        return t

    def __enter__(self):
        self._handles = [module_hooks.register_module_forward_pre_hook(self._pre),
                         module_hooks.register_module_forward_hook(self._post)]
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        for h in self._handles:
            h.remove()


def _tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        key = (t.device, t.untyped_storage().data_ptr())
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def memory_breakdown(model: nn.Module, optimizer_state: dict, saved_activation_bytes: int) -> dict:
    """Bytes of parameters, their gradients (as materialised in backward), optimizer state, activations."""
    params = [local_part(p) for p in model.parameters()]      # this rank's shards, if sharded
    state = [local_part(v) for s in optimizer_state.values() for v in s.values()
             if isinstance(v, torch.Tensor)]
    return {
        "param_bytes": _tensor_bytes(params),
        "grad_bytes": sum(p.numel() * p.element_size() for p in params if p.requires_grad),
        "optimizer_state_bytes": _tensor_bytes(state),
        "saved_activation_bytes": saved_activation_bytes,
    }
