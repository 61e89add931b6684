"""Optimizers: building them by name, live switching with state carry-over."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from lsml_tui.trainer import specs


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices and embeddings; never biases or norm gains (nanoGPT's split)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    return [g for g in ({"params": decay, "weight_decay": weight_decay},
                        {"params": rest, "weight_decay": 0.0}) if g["params"]]


class MuonAdamW:
    """Muon for the 2-D weights of hidden Linear layers, AdamW for everything else.

    Both take the same lr: Muon's ``match_rms_adamw`` scales its orthogonalised
    update to AdamW's RMS, which is what makes one lr serve both.
    """

    def __init__(self, model: nn.Module, lr: float, weight_decay: float, momentum: float):
        hidden = {id(m.weight) for name, m in model.named_modules()
                  if isinstance(m, nn.Linear) and not name.endswith("head")}
        trained = [p for p in model.parameters() if p.requires_grad]
        matrices = [p for p in trained if id(p) in hidden]
        others = [p for p in trained if id(p) not in hidden]
        self.optimizers = []
        if matrices:
            self.optimizers.append(torch.optim.Muon(matrices, lr=lr, weight_decay=weight_decay,
                                                    momentum=momentum,
                                                    adjust_lr_fn="match_rms_adamw"))
        if others:
            self.optimizers.append(torch.optim.AdamW(others, lr=lr, weight_decay=weight_decay))

    @property
    def param_groups(self) -> list[dict]:
        return [g for opt in self.optimizers for g in opt.param_groups]

    @property
    def state(self) -> dict:
        return {p: s for opt in self.optimizers for p, s in opt.state.items()}

    def state_dict(self) -> list[dict]:
        return [opt.state_dict() for opt in self.optimizers]

    def load_state_dict(self, states: list[dict]) -> None:
        for opt, state in zip(self.optimizers, states, strict=True):
            opt.load_state_dict(state)

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)


# torch has a fused kernel (one launch for the whole update, and a device-side skip of it
# through found_inf) for these; used on CUDA. The CPU keeps its default implementation.
# Not SGD: its fused kernel leaves the momentum buffer uninitialised (torch.empty_like)
# when the first update is skipped, and later steps build on that garbage (seen here on
# CPU, torch 2.13; LibreYOLO/libreyolo#771 hit it on CUDA).
FUSED = ("adagrad", "adam", "adamw")


def build_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float, hp: dict):
    """A fresh optimizer `name` over `model`'s parameters; `hp` holds momentum/beta1/beta2."""
    if name == "muon":
        return MuonAdamW(model, lr, weight_decay, hp["momentum"])
    groups = param_groups(model, weight_decay)
    if name in FUSED and next(model.parameters()).is_cuda:
        try:
            return _build(name, groups, lr, hp, fused=True)
        except RuntimeError:            # this torch has no fused kernel for it on this device
            pass
    return _build(name, groups, lr, hp)


def _build(name: str, groups: list[dict], lr: float, hp: dict, **fused):
    betas = (hp.get("beta1", 0.9), hp.get("beta2", 0.999))
    o = torch.optim
    make = {
        "sgd": lambda: o.SGD(groups, lr=lr, **fused),
        "momentum": lambda: o.SGD(groups, lr=lr, momentum=hp["momentum"], **fused),
        "nesterov": lambda: o.SGD(groups, lr=lr, momentum=hp["momentum"], nesterov=True, **fused),
        "adagrad": lambda: o.Adagrad(groups, lr=lr, **fused),
        "rmsprop": lambda: o.RMSprop(groups, lr=lr, alpha=hp["beta2"], momentum=hp["momentum"]),
        "adam": lambda: o.Adam(groups, lr=lr, betas=betas, **fused),
        "adamw": lambda: o.AdamW(groups, lr=lr, betas=betas, **fused),
        "nadam": lambda: o.NAdam(groups, lr=lr, betas=betas),
        "radam": lambda: o.RAdam(groups, lr=lr, betas=betas),
        "adamax": lambda: o.Adamax(groups, lr=lr, betas=betas),
        "adafactor": lambda: o.Adafactor(groups, lr=lr),
        "svrg": lambda: o.SGD(groups, lr=lr),               # on SVRG's gradient (svrg.py)
        "adamw-sf": lambda: _schedule_free(groups, lr, betas),
    }
    return make[name]()


def _schedule_free(groups: list[dict], lr: float, betas: tuple[float, float]):
    """Schedule-free AdamW, put in train mode: its step refuses to run in eval mode."""
    from schedulefree import AdamWScheduleFree
    opt = AdamWScheduleFree(groups, lr=lr, betas=betas)
    opt.train()
    return opt


@contextlib.contextmanager
def evaluating(opt):
    """The weights to evaluate: a schedule-free optimizer's x (its average) inside the block,
    back to the training point y after it; any other optimizer's weights as they are."""
    if not hasattr(opt, "eval"):
        yield
        return
    opt.eval()
    try:
        yield
    finally:
        opt.train()


def parts(opt) -> list:
    """The torch optimizers inside `opt`: itself, or MuonAdamW's two."""
    return getattr(opt, "optimizers", [opt])


def set_weight_decay(opt, weight_decay: float) -> int:
    """Set the weight decay of the groups built to decay (those holding a matrix or an
    embedding: biases and norm gains never decay); returns how many groups."""
    groups = [g for sub in parts(opt) for g in sub.param_groups
              if any(p.ndim >= 2 for p in g["params"])]
    for g in groups:
        g["weight_decay"] = weight_decay
    return len(groups)


def local(opt):
    """The optimizer whose state this process holds: a ZeroRedundancyOptimizer's shard
    (--parallel zero1: its ``optim``), or `opt` itself."""
    return opt.optim if type(opt).__name__ == "ZeroRedundancyOptimizer" else opt


def nadam_mu_product(step: int, beta1: float, momentum_decay: float = 4e-3) -> float:
    """NAdam's running product of mu_t = beta1 (1 - 0.5 * 0.96^(t psi)) for t = 1..step."""
    t = torch.arange(1, step + 1, dtype=torch.float64)
    return float(torch.prod(beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))))


def switch_optimizer(old, old_name: str, new_name: str, model: nn.Module, lr: float,
                     weight_decay: float, hp: dict) -> tuple[object, tuple[str, ...]]:
    """Build `new_name` over the same parameters; carry the state keys whose meaning survives.

    Returns the optimizer and the carried keys (empty when its state starts fresh).
    """
    if hasattr(old, "eval"):            # schedule-free: go on from its average x, the point
        old.eval()                      # it evaluates (its training point y is not the model)
    new = build_optimizer(new_name, model, lr, weight_decay, hp)
    a, b = specs.OPTIMIZERS[old_name], specs.OPTIMIZERS[new_name]
    if not a.family or a.family != b.family:
        return new, ()
    keys = b.carries
    # A fused optimizer keeps its step count on the parameter's device, an unfused one on the CPU.
    step_on = (lambda p: p.device) if getattr(new, "_step_supports_amp_scaling", False) else (
        lambda p: "cpu")
    for p, state in old.state.items():  # families hold plain torch optimizers, never MuonAdamW
        if all(k in state for k in keys):
            new.state[p] = {k: state[k].to(step_on(p)) if k == "step" else state[k] for k in keys}
            if new_name == "nadam":
                steps = int(state["step"])
                new.state[p]["mu_product"] = torch.tensor(nadam_mu_product(steps, hp["beta1"]),
                                                          dtype=state["step"].dtype)
    return new, keys


def rebuild_keeping_state(old, name: str, model: nn.Module, lr: float, weight_decay: float,
                          hp: dict) -> tuple[object, int]:
    """A new optimizer over the model's current parameters (after a norm swap).

    Parameters that survived keep their state; returns (optimizer, tensors kept).
    """
    new = build_optimizer(name, model, lr, weight_decay, hp)
    old_state = {p: (type(sub), s) for sub in parts(old) for p, s in sub.state.items()}
    kept = 0
    for sub in parts(new):
        for p in (p for g in sub.param_groups for p in g["params"]):
            if p in old_state and old_state[p][0] is type(sub):
                sub.state[p] = old_state[p][1]
                kept += 1
    return new, kept
