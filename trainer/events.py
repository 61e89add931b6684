"""Events the trainer emits, and the coalescer that batches them. No torch here.

Events are small frozen dataclasses. The trainer hands each to a ``Coalescer``,
which passes them on in batches, at most ``max_rate`` batches a second, so a
fast loop cannot flood the UI whatever its step rate.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class RunStarted:
    step: int
    run_id: str
    run_dir: str
    config: dict
    params: int
    device: str
    precision: str = ""             # the math mode in use (auto resolved): fp32, tf32, bf16, fp16


@dataclass(frozen=True)
class StepMetrics:
    step: int
    loss: float
    lr: float
    grad_norm: float                # global L2 norm before clipping
    clipped: bool                   # the norm exceeded the clip threshold
    examples_per_second: float
    time: float                     # wall clock, seconds since the epoch


@dataclass(frozen=True)
class ValMetrics:
    step: int
    val_loss: float


@dataclass(frozen=True)
class CommandApplied:
    step: int                       # the first step trained under the change
    command: str                    # 'optimizer adamw', 'pause', ...
    detail: str                     # what changed, in words
    changes: dict = field(default_factory=dict)
    ref: str = ""                   # the command's ref: the answer to whoever sent it


@dataclass(frozen=True)
class CommandRefused:
    step: int
    command: str
    reason: str
    ref: str = ""


@dataclass(frozen=True)
class Diverged:
    step: int
    loss: float
    message: str
    action: str = "stop"            # stop: the run ends | pause: it waits for a fix or a rewind


@dataclass(frozen=True)
class OutOfMemory:
    step: int
    message: str                    # what ran out, with a hint; the trainer pauses


@dataclass(frozen=True)
class RecordingProblem:
    step: int
    message: str                    # the store could not write (disk full, I/O error)
    dropped: int                    # rows dropped so far because the buffer was full


@dataclass(frozen=True)
class RunFailed:
    step: int
    error: str
    traceback: str


@dataclass(frozen=True)
class ClipEvent:
    step: int
    grad_norm: float                # before clipping
    threshold: float
    scale: float                    # what the gradients were multiplied by


@dataclass(frozen=True)
class NonFiniteGradients:
    step: int
    parameter: str                  # the first, in module order, with a NaN or Inf gradient
    loss: float
    message: str


@dataclass(frozen=True)
class FlopTable:
    step: int
    forward: int                    # FLOPs per step
    backward: int
    per_module: dict                # module -> [forward, backward]
    input_shape: list


@dataclass(frozen=True)
class LayerStats:
    step: int
    names: list                     # parameters, in module order
    grad_norms: list
    update_ratios: list             # ||delta w|| / ||w|| of this step's update
    saved_bytes: dict               # module -> bytes saved for backward


@dataclass(frozen=True)
class MemorySample:
    step: int
    param_bytes: int
    grad_bytes: int
    optimizer_state_bytes: int
    saved_activation_bytes: int
    cuda_peak_bytes: int | None     # torch.cuda.max_memory_allocated over the step


@dataclass(frozen=True)
class TimingSample:
    step: int
    phases: dict                    # data, forward, backward, optimizer -> seconds
    step_seconds: float             # typical unsampled step (moving average)
    flops_per_second: float | None
    mfu: float | None


@dataclass(frozen=True)
class SystemSample:
    step: int
    sample: dict                    # cpu_percent, rss_bytes, gpus: [...]


@dataclass(frozen=True)
class TraceCaptured:
    step: int
    path: str
    steps: int


@dataclass(frozen=True)
class DistSample:
    step: int
    world_size: int
    sync: str                       # allreduce | ps | bf16 | powersgd
    ranks: list                     # per rank: compute_s, comm_s, wait_s, step_s, ... (seconds)
    slowest: int                    # the rank whose compute took longest
    spread_s: float                 # slowest minus fastest step time
    predicted_step_s: float | None  # mean own compute + E[max injected delay] (straggler model)
    payload_bytes: float            # gradient bytes a rank handed to its comm hook
    wire_bytes_per_rank: float | None   # what the algorithm sends per rank (formula)
    busiest_link_bytes: float | None    # through the busiest link (rank 0's, parameter server)
    algbw: float | None             # payload / exposed comm time, bytes/s
    busbw: float | None             # algbw scaled by the algorithm's link factor
    noise_scale: float | None       # B_simple = tr(Sigma) / |G|^2 (EMA estimates)
    global_batch: int
    replicas_agree: bool | None     # every rank's weights sum to the same float64 (None:
                                    # no rank holds a replica, fsdp and pp)
    parallel: str = "ddp"           # ddp | zero1 | fsdp | tp | pp (--parallel)
    # bytes per rank by ZeRO's formula: a replica's, / N for what the mode shards
    optimizer_state_predicted: float | None = None
    param_predicted: float | None = None
    grad_predicted: float | None = None
    bubble_predicted: float | None = None   # pp: (p-1)/(m+p-1)
    comm_predicted: list | None = None      # bytes each rank sends a step, by the formula


@dataclass(frozen=True)
class TheoryInfo:
    """--model linear: what theory predicts for the optimizer and lr in use, from `step` on."""
    step: int
    L: float                        # largest Hessian eigenvalue (1 by construction)
    mu: float                       # smallest (1 / kappa)
    kappa: float
    optimizer: str
    lr: float
    momentum: float | None
    rate_theory: float | None       # per-step contraction of ||w - w*||; None: no theory
    lr_limit: float | None          # the largest stable lr (2/L for gradient descent)
    noise_ball: float | None        # stationary E||w - w*||^2 of SGD (batch < examples)
    distance: float                 # ||w - w*|| at `step`, where the predicted line starts


@dataclass(frozen=True)
class TheorySample:
    step: int
    distance: float                 # ||w_t - w*||, before step t's update
    distance_averaged: float | None = None  # ||w_avg - w*|| with --average


@dataclass(frozen=True)
class SharpnessSample:
    step: int
    sharpness: float                # top Hessian eigenvalue on a fixed batch (Rayleigh quotient)
    threshold: float | None         # the step-size limit: 2/lr (GD), (2+2b)/lr, Adam's own
    preconditioned: bool            # of P^-1/2 H P^-1/2 with Adam's P (Cohen et al. 2022)
    iterations: int                 # power-iteration steps (Hessian-vector products)
    seconds: float                  # what the measurement cost


@dataclass(frozen=True)
class NoiseSample:
    """--noise-scale-every: the gradient noise scale in one process (profilers/noise.py)."""
    step: int
    noise_scale: float | None       # B_simple = tr(Sigma) / |G|^2 (EMA estimates); None early
    g2: float | None                # the |G|^2 estimate (EMA)
    trace: float | None             # the tr(Sigma) estimate (EMA)
    batch: int                      # the run's batch size, to read B_simple against
    part: int                       # examples per part: the small batch of the two
    seconds: float                  # what the measurement cost


@dataclass(frozen=True)
class AveragedVal:
    step: int
    val_loss: float                 # the validation loss of the averaged weights (--average)


@dataclass(frozen=True)
class Overfitting:
    """Validation loss rose above its best for several validations while training loss fell
    (watches/generalization.py has the rule); emitted once."""
    step: int
    val_loss: float
    train_loss: float               # the mean of the recent steps' losses
    best_val_loss: float
    best_val_step: int
    train_loss_at_best: float


@dataclass(frozen=True)
class Logged:
    """A watched script's own values at a step (``run.log(accuracy=...)``), beyond the loss."""
    step: int
    values: dict                    # name -> float


@dataclass(frozen=True)
class Notice:
    """Something the user should know that is not a fault (what cannot be measured, why)."""
    step: int
    message: str


@dataclass(frozen=True)
class RunFinished:
    step: int
    status: str                     # finished | diverged | failed | interrupted
    summary: dict


Event = (RunStarted | StepMetrics | ValMetrics | CommandApplied | CommandRefused | Diverged
         | OutOfMemory | RecordingProblem | RunFailed | ClipEvent | NonFiniteGradients | FlopTable
         | LayerStats | MemorySample | TimingSample | SystemSample | TraceCaptured | DistSample
         | TheoryInfo | TheorySample | AveragedVal | SharpnessSample | NoiseSample | Overfitting
         | Logged | Notice | RunFinished)
EVENT_TYPES = {cls.__name__: cls for cls in Event.__args__}


def event_kind(event: Event) -> str:
    return type(event).__name__


def event_payload(event: Event) -> dict:
    return dataclasses.asdict(event)


def event_from_payload(kind: str, payload: dict) -> Event:
    """The inverse of ``event_payload``: a stored event back as its dataclass.

    Keys the class does not have (the store's id and time) are ignored; a missing
    field or an unknown kind raises ``TypeError`` / ``KeyError``.
    """
    cls = EVENT_TYPES[kind]
    return cls(**{f.name: payload[f.name] for f in dataclasses.fields(cls) if f.name in payload})


class Coalescer:
    """Collect events and hand them to `sink` in batches, at most `max_rate` a second."""

    def __init__(self, sink: Callable[[tuple], None], max_rate: float = 20.0,
                 clock: Callable[[], float] = time.monotonic):
        if max_rate <= 0:
            raise ValueError(f"max_rate must be > 0, got {max_rate}")
        self._sink, self._interval, self._clock = sink, 1.0 / max_rate, clock
        self._buffer: list = []
        self._lock = threading.Lock()   # the system sampler emits from its own thread
        self._last = float("-inf")
        self.batches_sent = 0

    def emit(self, event: Event) -> None:
        with self._lock:
            self._buffer.append(event)

    def poll(self) -> None:
        """Send the buffer if the last batch left at least 1/max_rate seconds ago."""
        if self._buffer and self._clock() - self._last >= self._interval:
            self.flush()

    def flush(self) -> None:
        """Send whatever is buffered now (before blocking, and at the end of a run)."""
        with self._lock:
            if not self._buffer:
                return
            batch, self._buffer = tuple(self._buffer), []
        self._last = self._clock()
        self.batches_sent += 1
        self._sink(batch)
