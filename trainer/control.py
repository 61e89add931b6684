"""Live control: commands queued from any thread, applied between two steps.

A mixin of ``Trainer`` (loop.py): each command is applied atomically before a
step and answered with an event saying what changed at which step, or why it
was refused.
"""

from __future__ import annotations

from lsml_tui.profilers.trace import TraceCapture
from lsml_tui.trainer import commands as C
from lsml_tui.trainer import specs
from lsml_tui.trainer.config import ConfigError, suggest
from lsml_tui.trainer.events import CommandApplied, CommandRefused
from lsml_tui.trainer.models import set_dropout, set_norm
from lsml_tui.trainer.optim.optimizers import (rebuild_keeping_state, set_weight_decay,
                                               switch_optimizer)
from lsml_tui.trainer.validate import check_clip, check_dropout, check_lr, check_weight_decay


class RunControls:
    """Pause, resume, single step and trace: what every run does alike with a command, the
    built-in trainer (``Controls``) and a watched script (watch/control.py)."""

    def _apply(self, cmd: C.Command) -> bool:
        """Apply `cmd` (the run's own ``_change``), answered with an event that says what
        changed at which step, or why it was refused (with the command's ref, so that its
        sender knows its own answer); True if it was applied."""
        name, ref = C.describe(cmd), getattr(cmd, "ref", "")
        try:
            detail, changes = self._change(cmd)
        except ConfigError as e:
            self.emit(CommandRefused(self.step, name, str(e), ref))
            return False
        self.emit(CommandApplied(self.step, name, detail, changes, ref))
        return True

    def run_control(self, cmd: C.Command) -> tuple[str, dict] | None:
        """(detail, changes) for one of these commands, None for any other."""
        match cmd:
            case C.Pause():
                if self.paused:
                    raise ConfigError("already paused")
                self.paused = True
                return f"paused before step {self.step}", {"paused": True}
            case C.Resume():
                if not self.paused:
                    raise ConfigError("not paused")
                self.paused = False
                return f"resumed at step {self.step}", {"paused": False}
            case C.SingleStep():
                if not self.paused:
                    raise ConfigError("single step applies while paused; pause first")
                self._single_step = True
                return f"single step {self.step}", {}
            case C.CaptureTrace(steps=n):
                if self.store is None:
                    raise ConfigError("a trace needs a run directory to be written to")
                if self._trace is not None:
                    raise ConfigError("a trace is already being captured")
                if not 1 <= n <= 100:
                    raise ConfigError(f"trace steps {n} is out of range: must be 1 to 100")
                path = self.store.run_dir / f"trace-step{self.step}.json"
                self._trace = TraceCapture(path, n, self.device)
                return f"tracing steps {self.step} to {self.step + n - 1} into {path.name}", {
                    "path": str(path)}
        return None


class Controls(RunControls):
    """What ``Trainer`` does with a command."""

    def submit(self, cmd: C.Command) -> None:
        """Queue a command; it is applied between two steps (thread-safe)."""
        self._commands.put(cmd)

    def _waiting(self) -> bool:
        return self.paused and not self._single_step and not self._stop

    def drain_commands(self) -> None:
        """Apply the commands due before this step; while paused, wait for more.

        Steps still in flight are settled first: a command acts on what the user has seen."""
        while True:
            if self._waiting() and not self.settle(0):
                self._diverged = True
            for cmd in self.dp.commands(self._commands, self._waiting(), self.events.flush):
                if not self.settle(0):
                    self._diverged = True
                self._apply(cmd)
            if self._diverged or not self._waiting():     # a step read late ended the run
                return

    def _apply(self, cmd: C.Command) -> None:
        if not super()._apply(cmd):
            return
        if self.theory is not None and isinstance(cmd, (C.SetOptimizer, C.SetLR, C.Rewind)):
            self.emit_sample(self.theory.predict(self))     # --model linear: new predictions

    def _change(self, cmd: C.Command) -> tuple[str, dict]:
        """Apply one command; return (detail, changes) or raise ConfigError with the reason."""
        if self.dp.sharded and isinstance(cmd, (C.SetOptimizer, C.SetNorm)):
            raise ConfigError(f"--parallel {self.cfg.parallel} {specs.SPLITS[self.cfg.parallel]} "
                              f"across ranks: a live optimizer or norm switch would rebuild "
                              f"them on every rank; restart the run with the new setting")
        common = self.run_control(cmd)
        if common is not None:
            return common
        match cmd:
            case C.SetOptimizer(name=new, lr=lr, hparams=hp):
                return self._set_optimizer(new, lr, hp)
            case C.SetNorm(kind=kind):
                refusal = specs.norm_refusal(self.cfg.model, kind)
                if refusal:
                    raise ConfigError(f"norm {kind!r} refused for the {self.cfg.model}: {refusal}")
                if kind == self.norm:
                    raise ConfigError(f"norm is already {kind}")
                old, slots = self.norm, set_norm(self.model, kind)
                self.norm = kind
                self._wrap()                    # DDP tracks the new parameters; recompiled
                self._index_params()
                self._restart_average_and_svrg()
                self.optimizer, kept = rebuild_keeping_state(
                    self.optimizer, self.optimizer_name, self.model, self.base_lr,
                    self.weight_decay, self.hparams)
                return (f"norm {old} -> {kind} in {slots} slots; new norms start as identity; "
                        f"optimizer state kept for {kept} unchanged tensors",
                        {"norm": kind, "previous": old})
            case C.SetLR(lr=lr):
                check_lr(lr)
                old, self.base_lr = self.base_lr, float(lr)
                return f"lr {old:g} -> {lr:g}", {"lr": float(lr), "previous": old}
            case C.SetClip(threshold=t):
                check_clip(t)
                old, self.clip = self.clip, t
                fmt = lambda v: "off" if v is None else f"{v:g}"  # noqa: E731
                return f"clip {fmt(old)} -> {fmt(t)}", {"clip": t, "previous": old}
            case C.SetDropout(p=p):
                if self.cfg.dropout is None:
                    raise ConfigError(f"dropout does not apply to the {self.cfg.model} model: "
                                      f"{specs.DROPOUT_REFUSED[self.cfg.model]}")
                check_dropout(p)
                old, self.dropout = self.dropout, float(p)
                slots = set_dropout(self.model, self.dropout)
                return (f"dropout {old:g} -> {p:g} in {slots} slots (training only: "
                        f"validation runs without it)", {"dropout": float(p), "previous": old})
            case C.SetWeightDecay(weight_decay=wd):
                check_weight_decay(wd)
                old, self.weight_decay = self.weight_decay, float(wd)
                groups = set_weight_decay(self.optimizer, self.weight_decay)
                how = ("decoupled, shrinking the weights by lr x wd each step"
                       if self.optimizer_name in specs.DECOUPLED_DECAY else
                       "an L2 penalty wd/2 |w|^2 added to the loss's gradient")
                return (f"weight decay {old:g} -> {wd:g} on {groups} groups ({how})",
                        {"weight_decay": float(wd), "previous": old})
            case C.Rewind():
                detail = self.snapshot.restore(self)
                self._restart_average_and_svrg()
                self.blow_up.reset()
                return detail
            case C.Stop():
                self._stop = True
                return f"stop requested before step {self.step}", {}
        raise ConfigError(f"unknown command {cmd!r}")

    def _restart_average_and_svrg(self) -> None:
        """The model changed under them (a norm swap, a rewind): start again from it."""
        if self.average is not None:
            self.average = type(self.average)(self.model, self.average.spec)
        self._make_svrg()

    def _set_optimizer(self, new: str, lr: float | None, hp: dict) -> tuple[str, dict]:
        if new not in specs.OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {new!r}; allowed: {', '.join(specs.OPTIMIZERS)}"
                              f"{suggest(new, specs.OPTIMIZERS)}")
        spec = specs.OPTIMIZERS[new]
        if new == "svrg" and self.dp.size > 1:
            raise ConfigError("svrg runs in one process: its snapshot gradient is per rank")
        unknown = set(hp) - set(spec.hparams) - {"weight_decay"}
        if unknown:
            raise ConfigError(f"{', '.join(sorted(unknown))} does not apply to {new}")
        lr = self.base_lr if lr is None else lr
        check_lr(lr)
        hparams = {**spec.defaults, **{k: v for k, v in hp.items() if k != "weight_decay"}}
        wd = hp.get("weight_decay", spec.weight_decay)
        old = self.optimizer_name
        self.optimizer, carried = switch_optimizer(self.optimizer, old, new, self.model, lr, wd,
                                                   hparams)
        self.optimizer_name, self.base_lr, self.weight_decay, self.hparams = new, lr, wd, hparams
        self._make_svrg()
        state = f"carried {', '.join(carried)} from {old}" if carried else "state starts fresh"
        if old in specs.SCHEDULE_FREE:          # switch_optimizer went to its average first
            state += f"; the weights go on from {old}'s average x"
        return (f"optimizer {old} -> {new} (lr {lr:g}); {state}",
                {"optimizer": new, "previous": old, "lr": lr, "carried": list(carried),
                 "weight_decay": wd})
