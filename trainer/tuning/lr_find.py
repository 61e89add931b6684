"""The learning-rate range test (Smith 2017, "Cyclical learning rates"; as fastai's
``lr_find`` and Lightning's ``Tuner.lr_find`` run it), on the real trainer.

A fresh model trains one step per learning rate on an exponential ramp from
``min_lr`` to ``max_lr``: lr_i = min_lr * (max_lr / min_lr) ** (i / (N - 1)). Each
step's loss is smoothed by a bias-corrected exponential moving average (beta 0.98):
a_i = beta a_(i-1) + (1 - beta) loss_i, smoothed_i = a_i / (1 - beta^(i+1)). The test
stops when the smoothed loss passes 4x the best smoothed loss so far (the loss has
blown up: larger lrs only say the same louder) or a loss or gradient turns NaN/Inf.

The suggestion is read off the smoothed curve, the first tenth and the last five
points left out (fastai's window: the start is mostly the average warming up, the end
is the blow-up). Three rules, all computed, one chosen (``--rule``):

- ``minimum`` (the default; Smith's advice, fastai's ``lr_min``): a tenth of the lr at
  the lowest smoothed loss. The minimum is where the lr already hurts; an order of
  magnitude below it still learns fast. On least squares, gradient descent's loss
  cannot rise while lr < 2/L, so the minimum sits near 2/L or past it, and a tenth is
  a stable step unless the loss kept falling past 20/L.
- ``valley`` (fastai's default since 2.4, by ESRI): the longest stretch over which the
  smoothed loss keeps falling (a longest strictly decreasing subsequence, L points from
  its start), and the point int(L/3) + int(L/6) into it, about half-way down. (fastai's
  docs say "roughly 2/3"; its code, which this matches index for index, lands half-way.)
  Where the loss falls from the first step (gradient descent on a convex problem) the
  stretch is the whole window and the point is its middle, whatever the problem.
- ``steep`` (Lightning's rule; fastai's ``steep``): the steepest descent of the smoothed
  loss against log lr.

Why ``minimum``: 300 steps trained at each rule's suggestion on 11 model/optimizer
pairs (every family; Adam and the SGD family; one seed, CPU), the final training loss
against the best of the three: ``minimum`` 1.24x on geometric mean (worst: the default
CNN with Adam, 6x), ``steep`` 1.73x (worst 9x), ``valley`` 1.97x (worst 20x, least
squares). ``valley`` did best with Adam on the default transformer and CNN, ``minimum``
with every SGD-family optimizer.

Everything here returns plain data. Torch is imported only when the test runs.
"""

from __future__ import annotations

import bisect
import math
import time
from dataclasses import asdict, dataclass, field

from lsml_tui.trainer import specs
from lsml_tui.trainer.config import ConfigError, RunConfig

MIN_LR, MAX_LR, NUM_STEPS = 1e-7, 10.0, 100     # fastai's defaults (Lightning's: 1e-8, 1, 100)
MIN_STEPS = 5                   # fewer leave nothing for the rule after its window
BETA = 0.98                     # smoothing of the loss, as fastai and Lightning
STOP_FACTOR = 4.0               # stop once the smoothed loss passes this many times its best
RULES = ("minimum", "valley", "steep")        # the first is the default


@dataclass
class RangeTest:
    """What a range test measured and suggests (plain data; ``asdict`` gives the JSON)."""
    min_lr: float
    max_lr: float
    num_steps: int
    rule: str
    lrs: list = field(default_factory=list)        # lr of each step trained, on the ramp
    losses: list = field(default_factory=list)     # that step's training loss (before its update)
    smoothed: list = field(default_factory=list)   # bias-corrected EMA of the losses
    suggested_lr: float | None = None
    suggestion_index: int | None = None            # the point of lrs nearest it, to mark it
    why: str = ""                                   # the rule, applied: where on the curve
    suggestions: dict = field(default_factory=dict)    # every rule's lr, to compare
    stop_reason: str = ""                           # why the ramp ended
    stopped_early: bool = False                     # before max_lr
    best_lr: float | None = None                    # lr at the lowest smoothed loss
    beta: float = BETA
    stop_factor: float = STOP_FACTOR
    model: str = ""
    optimizer: str = ""
    norm: str = ""
    device: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def check(min_lr: float, max_lr: float, num_steps: int, rule: str = RULES[0]) -> None:
    """Refuse a range that cannot be tested, with one line naming the value."""
    for name, value in (("--min-lr", min_lr), ("--max-lr", max_lr)):
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} {value:g} is out of range: must be a finite number > 0")
    if not max_lr > min_lr:
        raise ConfigError(f"--max-lr {max_lr:g} must be greater than --min-lr {min_lr:g}")
    if num_steps < MIN_STEPS:
        raise ConfigError(f"--num-steps {num_steps} is out of range: must be an integer >= "
                          f"{MIN_STEPS}")
    if rule not in RULES:
        raise ConfigError(f"--rule {rule!r} is not one of: {', '.join(RULES)}")


def ramp(min_lr: float, max_lr: float, num_steps: int) -> list[float]:
    """The exponential ramp: a constant ratio (max/min)^(1/(N-1)) from one lr to the next."""
    return [min_lr * (max_lr / min_lr) ** (i / (num_steps - 1)) for i in range(num_steps)]


def smooth(losses: list[float], beta: float = BETA) -> list[float]:
    """Bias-corrected EMA: the first value is the first loss, not (1 - beta) times it."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def valley(values: list[float]) -> int:
    """fastai's valley: int(L/3) + int(L/6) points into the longest strictly decreasing
    subsequence of `values` (L long).

    The same index as fastai's O(n^2) loop, in O(n log n): ``run[i]`` is the length of the
    longest decreasing subsequence ending at i (patience sorting on -value); the valley ends
    at the first i of the longest, and starts ``run[end]`` points before it."""
    tails: list[float] = []                 # tails[k]: largest -value ending a run of k + 1
    run = []
    for v in values:
        k = bisect.bisect_left(tails, -v)
        tails[k:k + 1] = [-v]
        run.append(k + 1)
    end = run.index(max(run))
    start = end - run[end]
    sections = (end - start) / 3
    return max(0, start + int(sections) + int(sections / 2))


def steep(values: list[float]) -> int:
    """The steepest descent: the point before the most negative step of `values` (on the
    exponential ramp every step is the same distance in log lr)."""
    slopes = [b - a for a, b in zip(values, values[1:])]
    return slopes.index(min(slopes))


def suggest(lrs: list[float], smoothed: list[float], num_steps: int,
            rule: str) -> tuple[float | None, str]:
    """(the suggested lr, the rule in words), or (None, why not)."""
    begin, end = num_steps // 10, len(smoothed) - 5         # fastai's window
    if end - begin < 2:                                      # a short test: every point
        begin, end = 0, len(smoothed)
    if end - begin < 2:
        return None, f"no suggestion: {len(smoothed)} point(s) recorded, the rule needs 2"
    window, span = smoothed[begin:end], f"points {begin} to {end - 1}"
    if rule == "minimum":
        i = begin + window.index(min(window))
        still = "; still falling there: a larger --max-lr may suggest more" if i == end - 1 else ""
        return lrs[i] / 10, (f"minimum: a tenth of lr {lrs[i]:.3g}, where the smoothed loss "
                             f"is lowest ({span}{still})")
    if rule == "valley":
        i = begin + valley(window)
        return lrs[i], (f"valley: half-way down the longest decreasing stretch of the "
                        f"smoothed loss (fastai; {span})")
    i = begin + steep(window)
    return lrs[i], (f"steep: the steepest descent of the smoothed loss against log lr "
                    f"(Lightning; {span})")


def nearest(lrs: list[float], lr: float) -> int:
    """The point of the ramp nearest `lr` in log scale."""
    return min(range(len(lrs)), key=lambda i: abs(math.log(lrs[i] / lr)))


def range_test(cfg: RunConfig, min_lr: float = MIN_LR, max_lr: float = MAX_LR,
               num_steps: int = NUM_STEPS, rule: str = RULES[0],
               stop_factor: float = STOP_FACTOR, progress=None) -> RangeTest:
    """Train a fresh model of `cfg` one step per lr on the ramp; return what it measured.

    Whatever `cfg` says about schedules, divergence, validation and profiling, the test
    sets the lr itself each step and ends on its own rule: a blow-up or a NaN ends it, it
    never pauses. `progress(i, lr, loss)` is told of each step recorded."""
    check(min_lr, max_lr, num_steps, rule)
    from lsml_tui.trainer.events import Diverged, NonFiniteGradients, StepMetrics
    from lsml_tui.trainer.loop import Trainer
    from lsml_tui.trainer.recovery import is_out_of_memory

    events: list = []
    trainer = Trainer(ramp_config(cfg, num_steps), sink=events.extend, late_readback=False)
    out = RangeTest(min_lr, max_lr, num_steps, rule, beta=BETA, stop_factor=stop_factor,
                    model=cfg.model, optimizer=cfg.optimizer, norm=cfg.norm or "",
                    device=str(trainer.device))
    start, best, avg = time.perf_counter(), math.inf, 0.0
    try:
        for lr in ramp(min_lr, max_lr, num_steps):
            trainer.base_lr = lr            # the schedule is constant: this is the step's lr
            try:
                trainer.advance()           # False after a NaN: the events below say why
            except Exception as e:  # out of memory ends the test; anything else is a failure
                if not is_out_of_memory(e):
                    raise
                out.stop_reason = f"out of memory at lr {lr:.3g}"
                break
            trainer.events.flush()
            loss, reason = None, ""
            for e in events:
                if isinstance(e, StepMetrics):
                    loss = e.loss
                elif isinstance(e, Diverged):
                    reason = f"the loss became {e.loss} at lr {lr:.3g}"
                elif isinstance(e, NonFiniteGradients) and e.parameter != "(fp16 overflow)":
                    reason = f"a gradient became NaN or Inf ({e.parameter}) at lr {lr:.3g}"
            events.clear()
            if loss is not None and math.isfinite(loss):
                out.lrs.append(lr)
                out.losses.append(loss)
                avg = BETA * avg + (1 - BETA) * loss
                smoothed = avg / (1 - BETA ** len(out.losses))
                out.smoothed.append(smoothed)
                best = min(best, smoothed)
                if progress is not None:
                    progress(len(out.lrs) - 1, lr, loss)
                if smoothed > stop_factor * best:
                    reason = (f"the smoothed loss {smoothed:.4g} passed {stop_factor:g}x its "
                              f"best {best:.4g} at lr {lr:.3g}")
            elif not reason:
                reason = f"the loss became {loss} at lr {lr:.3g}"
            if reason:
                out.stop_reason = reason
                break
        else:
            out.stop_reason = f"reached --max-lr {max_lr:g} after {num_steps} steps"
    except KeyboardInterrupt:
        out.stop_reason = f"interrupted after {len(out.lrs)} steps"
    out.stopped_early = len(out.lrs) < num_steps
    out.seconds = time.perf_counter() - start
    if out.smoothed:
        out.best_lr = out.lrs[out.smoothed.index(min(out.smoothed))]
    out.suggestions = {name: suggest(out.lrs, out.smoothed, num_steps, name)[0]
                       for name in RULES}
    out.suggested_lr, out.why = suggest(out.lrs, out.smoothed, num_steps, rule)
    if out.suggested_lr is not None:
        out.suggestion_index = nearest(out.lrs, out.suggested_lr)
    return out


def ramp_config(cfg: RunConfig, num_steps: int) -> RunConfig:
    """`cfg` as the range test trains it: a constant schedule (the test sets each lr), a
    NaN or blow-up that ends the step instead of pausing (the test has its own rule), no
    validation, profiling, sharpness, noise scale, averaging or snapshots (time the test
    does not need), and one process: N data-parallel ranks average N batches, which is one
    batch N times as large (with batch norm, per-rank statistics differ). Under --parallel
    tp or pp every rank trains on the one batch: one process at that batch."""
    batch = cfg.batch_size * (1 if cfg.parallel in specs.SPLIT_MODEL else cfg.workers)
    if cfg.model == "linear":
        batch = min(batch, cfg.examples)
    never = num_steps + 1
    return cfg.replace(schedule="constant", steps=num_steps, on_diverge="stop",
                       diverge_factor=None, val_every=never, sharpness_every=None,
                       noise_scale_every=None, average=None, profile=False,
                       snapshot_every=never, workers=1, batch_size=batch, parallel="ddp",
                       microbatches=None, pipeline_schedule=None, reshard_after_forward=None)
