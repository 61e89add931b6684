"""Commands the trainer accepts between two steps. No torch here.

Each is answered by a ``CommandApplied`` or ``CommandRefused`` event naming the
step at which it took effect (and the command's ``ref``, where it has one).
"""

from __future__ import annotations

import dataclasses
import json
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
class SetDropout:
    p: float                            # every dropout of the model; 0 turns it off


@dataclass(frozen=True)
class SetWeightDecay:
    weight_decay: float                 # on the decayed groups (matrices and embeddings)


@dataclass(frozen=True)
class SetClip:
    threshold: float | None             # None turns clipping off


@dataclass(frozen=True)
class Pause:
    ref: str = ""                       # echoed in the answer: who asked knows it is theirs


@dataclass(frozen=True)
class Resume:
    ref: str = ""


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


Command = (SetOptimizer | SetNorm | SetLR | SetClip | SetDropout | SetWeightDecay | Pause | Resume | SingleStep | Stop | Rewind
           | CaptureTrace)


# Commands that change how the model trains: the loss curve is marked where they applied.
SWITCHES = ("optimizer", "norm", "lr", "clip", "dropout", "weight")    # weight decay


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
        case SetDropout(p=p):
            return f"dropout {p:g}"
        case SetWeightDecay(weight_decay=wd):
            return f"weight decay {wd:g}"
        case CaptureTrace(steps=n):
            return f"trace {n} steps"
    return type(cmd).__name__.lower().replace("singlestep", "single step")


COMMAND_TYPES = {cls.__name__: cls for cls in Command.__args__}


def to_json(cmd: Command) -> str:
    """A command as JSON, for the run store's commands table (``lsml-tui open`` on a live run)."""
    return json.dumps({"kind": type(cmd).__name__, **dataclasses.asdict(cmd)})


def from_json(text: str) -> Command:
    """The inverse of ``to_json``; raises ValueError on anything else."""
    try:
        data = json.loads(text)
        cls = COMMAND_TYPES[data.pop("kind")]
        return cls(**data)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"not a command: {text[:80]!r} ({e})") from None
