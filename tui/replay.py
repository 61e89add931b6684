"""A finished (or failed, or killed) run played back from its store into the dashboard.

The store holds every event the panels need: steps, validation, clips, sampled
profiles and the event log. ``recorded_events`` merges them back into one
step-ordered stream of the trainer's own event classes; ``RecordedBridge``
hands that stream to the app a chunk per tick, so a million-step run neither
loads into memory at once nor stalls the first frame.
"""

from __future__ import annotations

import heapq
import itertools
from pathlib import Path

from lsml_tui.trainer.config import FIELDS, RunConfig
from lsml_tui.trainer.events import ClipEvent, StepMetrics, ValMetrics, event_from_payload
from lsml_tui.trainer.store.reader import open_run
from lsml_tui.tui.bridge import ReplayBridge

CHUNK = 50_000          # events handed to the panels per tick


def merge_rows(steps, clips, vals, samples, events):
    """Stored rows back as the trainer's events, merged in step order (the trainer's order
    within a step). Each argument is iterated once, already in step order: the rows of the
    steps, clips and val tables, samples as (step, kind, payload dict), events as dicts."""
    streams = (
        ((e["step"], 0 if e["kind"] == "RunStarted" else 5, event_from_payload(e["kind"], e))
         for e in events),
        ((s, 1, StepMetrics(s, loss, lr, g, bool(c), eps, t))
         for s, t, loss, lr, g, _after, c, eps in steps),
        ((s, 2, ClipEvent(s, g, th, sc)) for s, g, th, sc in clips),
        ((s, 3, ValMetrics(s, loss)) for s, _t, loss in vals),
        ((s, 4, event_from_payload(kind, {**payload, "step": s})) for s, kind, payload in samples),
    )
    counter = itertools.count()         # a tie-breaker: events never compare
    merged = heapq.merge(*(((s, rank, next(counter), e) for s, rank, e in stream)
                           for stream in streams))
    for _s, _rank, _n, event in merged:
        yield event


def recorded_events(run_dir):
    """Every recorded event of the run, in step order."""
    with open_run(run_dir) as r:
        yield from merge_rows(r.iter_rows("steps"), r.iter_rows("clips"), r.iter_rows("val"),
                              r.iter_rows("samples"), r.events())


class RecordedBridge(ReplayBridge):
    """Feeds a stored run to the dashboard; there is no trainer to command."""

    def __init__(self, cfg: RunConfig, run_dir):
        super().__init__(cfg)
        self.run_dir = Path(run_dir)
        with open_run(run_dir) as r:
            self.status = r.info().status       # what the run ended as (killed runs too)
        self._stream = recorded_events(run_dir)

    def more(self) -> list:
        if self.ended:
            return []
        out = list(itertools.islice(self._stream, CHUNK))
        if len(out) < CHUNK:
            self.ended = True
        return out


def replay_config(run_dir) -> RunConfig:
    """The run's config as it was stored, for the status line and the pickers."""
    with open_run(run_dir) as r:
        stored = r.info().config
    return RunConfig(**{k: v for k, v in stored.items() if k in FIELDS})   # older/newer keys


def watched(run_dir) -> bool:
    """A run of the user's own loop (lsml_tui.watch), not of a built-in model."""
    with open_run(run_dir) as r:
        return r.info().config.get("source") == "watch"
