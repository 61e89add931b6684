"""Commands the trainer accepts between two steps. No torch here.

Each is answered by a ``CommandApplied`` or ``CommandRefused`` event naming the
step at which it took effect.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SetOptimizer:
    name: str
    lr: float | None = None             # None keeps the current base learning rate
    hparams: dict = field(default_factory=dict)  # momentum, beta1, beta2, weight_decay


@dataclass(frozen=True)
class SetNorm:
    kind: str


@dataclass(frozen=True)
class SetLR:
    lr: float


@dataclass(frozen=True)
class SetClip:
    threshold: float | None             # None turns clipping off


@dataclass(frozen=True)
class Pause:
    pass


@dataclass(frozen=True)
class Resume:
    pass


@dataclass(frozen=True)
class SingleStep:
    pass


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class Rewind:
    """Restore the last good weights and optimizer state (kept every --snapshot-every steps)."""


@dataclass(frozen=True)
class CaptureTrace:
    steps: int = 5                      # torch.profiler over this many steps


Command = (SetOptimizer | SetNorm | SetLR | SetClip | Pause | Resume | SingleStep | Stop | Rewind
           | CaptureTrace)


# Commands that change how the model trains: the loss curve is marked where they applied.
SWITCHES = ("optimizer", "norm", "lr", "clip")


def describe(cmd: Command) -> str:
    """A short human label: 'optimizer adamw', 'lr 0.01', 'pause'."""
    match cmd:
        case SetOptimizer(name=name):
            return f"optimizer {name}"
        case SetNorm(kind=kind):
            return f"norm {kind}"
        case SetLR(lr=lr):
            return f"lr {lr:g}"
        case SetClip(threshold=t):
            return "clip off" if t is None else f"clip {t:g}"
        case CaptureTrace(steps=n):
            return f"trace {n} steps"
    return type(cmd).__name__.lower().replace("singlestep", "single step")
