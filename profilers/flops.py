"""FLOPs per module, forward and backward, with torch's FlopCounterMode.

Convention: attention is counted in full (QK^T and AV over all T x T pairs,
4 * B * h * T^2 * d_head forward), as torch's own sdpa formulas do, causal or
not. Only matmul-like ops are counted (mm, addmm, bmm, conv, attention);
elementwise work (norms, activations, softmax, bias adds) is not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten

# The CPU attention kernel sdpa dispatches to has no formula in torch's registry
# (its CUDA twins do), so attention would silently count as zero on CPU.
_CPU_ATTENTION = {
    aten._scaled_dot_product_flash_attention_for_cpu: flop_counter.sdpa_flop,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: flop_counter.sdpa_backward_flop,
}
for _op, _formula in _CPU_ATTENTION.items():
    if _op not in flop_counter.flop_registry:
        flop_counter.register_flop_formula(_op, get_raw=True)(_formula)  # already shape-wrapped


@dataclass(frozen=True)
class FlopCount:
    forward: int                                # whole step, forward
    backward: int                               # whole step, backward
    per_module: dict                            # module -> (forward, backward) of its own ops

    @property
    def total(self) -> int:
        return self.forward + self.backward


def _totals(counts: dict) -> dict[str, int]:
    return {name: sum(ops.values()) for name, ops in counts.items()}


class FlopMeter:
    """Count a training step: ``with meter:`` around it, ``end_forward()`` where the forward
    ends. A step made of several forwards and backwards (gradient accumulation, a loop that
    is not ours) brackets each forward with ``begin_forward()``/``end_forward()``, and work
    that is not training (a validation forward) with ``begin_skip()``/``end_skip()``."""

    def __init__(self):
        self._mode = FlopCounterMode(display=False)
        self._fwd: dict[str, int] = {}
        self._skipped: dict[str, int] = {}
        self._at: dict[str, int] = {}               # counts where the open section began
        self.result: FlopCount | None = None

    def __enter__(self):
        self._mode.__enter__()
        return self

    def _now(self) -> dict[str, int]:
        return _totals(self._mode.get_flop_counts())

    def begin_forward(self) -> None:
        self._at = self._now()

    def end_forward(self) -> None:
        _add(self._fwd, self._now(), self._at)

    def begin_skip(self) -> None:
        self._at = self._now()

    def end_skip(self) -> None:
        _add(self._skipped, self._now(), self._at)

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
        if exc[0] is None:
            total = self._now()
            _add(total, {}, self._skipped)          # less what was not training
            self.result = _split(self._fwd, total)


def _add(into: dict[str, int], now: dict[str, int], before: dict[str, int]) -> None:
    """into += now - before, per module."""
    for name in now.keys() | before.keys():
        into[name] = into.get(name, 0) + now.get(name, 0) - before.get(name, 0)


def _split(fwd: dict[str, int], total: dict[str, int]) -> FlopCount:
    """Per module (forward, backward) FLOPs of its own ops, not its children's.

    The counter credits an op to every enclosing module; subtracting each
    module's direct children leaves what it runs itself (the attention kernel
    stays with ``attn`` while ``qkv`` and ``proj`` have their own rows).
    """
    # Every counted backward op is the gradient of a matmul-like forward op of
    # the same module, so a module with no forward FLOPs owns no backward ones;
    # pass-through modules (Identity) confuse the backward module tracker, which
    # would otherwise credit them.
    names = [n for n in total if n != "Global" and fwd.get(n, 0)]
    bwd = {n: total[n] - fwd[n] for n in names}
    children: dict[str, list[str]] = {n: [] for n in names}
    for n in names:  # the nearest recorded ancestor (a ModuleList is never called)
        parent = n
        while "." in parent:
            parent = parent.rsplit(".", 1)[0]
            if parent in children:
                children[parent].append(n)
                break
    root = next((n for n in names if "." not in n), None)
    # DistributedDataParallel holds the model as `.module`: name modules as the model does
    prefix = f"{root}.module." if root == "DistributedDataParallel" else f"{root}."
    per = {}
    for n in names:
        own_f = fwd[n] - sum(fwd[c] for c in children[n])
        own_b = bwd[n] - sum(bwd[c] for c in children[n])
        if own_f:
            per[n.removeprefix(prefix) if n != root else "(model)"] = (own_f, own_b)
    g_fwd = fwd.get("Global", 0)
    return FlopCount(forward=g_fwd, backward=total.get("Global", 0) - g_fwd, per_module=per)


def count_flops(model: torch.nn.Module, x, y, loss_fn) -> FlopCount:
    """FLOPs of one training step on (x, y); leaves the gradients it makes in place."""
    with FlopMeter() as meter:
        loss = loss_fn(model(x), y)
        meter.end_forward()
        loss.backward()
    return meter.result
