"""The dashboard's actions: the keys that command the trainer (optimizer, norm, lr, clip,
dropout, weight decay, pause, step, rewind, trace, lr-find, model, restart), export, and the views (log scale,
smoothing, help). ``Actions`` is a part of ``LsmlApp`` (app.py), which binds the keys.
"""

from __future__ import annotations

import asyncio
import functools

from lsml_tui.trainer import commands as C
from lsml_tui.trainer import specs
from lsml_tui.trainer.config import ConfigError, RunConfig
from lsml_tui.trainer.validate import (check_clip, check_dropout, check_lr, check_weight_decay,
                                       resolve)
from lsml_tui.tui.panels import EventsPanel, GradientsPanel, LossPanel, StatusLine
from lsml_tui.tui.screens import ChoiceScreen, HelpScreen, ValueScreen

MODEL_FIELDS = ("layers", "width", "heads", "seq_len", "cell", "activation", "residual", "text",
                "dim", "kappa", "examples", "noise", "norm", "batch_size")


# What a run of the user's own loop (lsml_tui.watch) cannot do from the dashboard, and why:
# these keys show as unavailable there.
NOT_FOR_YOUR_SCRIPT = {
    "pick_optimizer": "your script builds its optimizer; switch it there",
    "pick_norm": "your script builds its model; change the normalization there",
    "set_clip": "your script does its own clipping; change the threshold there",
    "set_dropout": "your script builds its model; set its dropout there",
    "set_weight_decay": "your script builds its optimizer; set its weight decay there",
    "rewind": "a watched run keeps no snapshot of your model to rewind to",
    "lr_find": "the range test trains lsml-tui's own models; run it on yours with a sweep "
               "of your script",
    "pick_model": "your script builds its model",
    "restart": "start your script again: lsml-tui run SCRIPT",
}


def trains(action):
    """A control that commands the trainer: a read-only replay has none, so it is refused
    there with a hint on how to train the run's config again; a watched run (the user's own
    loop) refuses what cannot apply to it, with the reason."""
    name = action.__name__.removeprefix("action_")

    @functools.wraps(action)        # Textual reads the action's signature through this
    def guarded(self, *args):
        if self.watched and name in NOT_FOR_YOUR_SCRIPT:
            self.notify(f"not for your own script: {NOT_FOR_YOUR_SCRIPT[name]}",
                        severity="warning")
            return None
        if self.read_only:
            again = ("to train it again, run your script" if self.watched else
                     f"to train this config again: lsml-tui --config {self.run_dir}/config.toml")
            self.notify(f"read-only replay; {again}", severity="warning")
            return None
        return action(self, *args)  # an async action's coroutine is awaited by Textual
    return guarded


class Actions:
    """What the dashboard's keys do; mixed into the app, whose state they read."""

    def check_action(self, action: str, parameters) -> bool | None:
        """None shows a key as unavailable (dimmed in the footer): what a watched run
        cannot do."""
        if getattr(self, "watched", False) and action in NOT_FOR_YOUR_SCRIPT:
            return None
        return True

    def send(self, cmd: C.Command) -> None:
        if self.bridge is None or not self.bridge.process.is_alive() or self.final is not None:
            self.notify("the trainer is not running; press r to restart", severity="warning")
            return
        self.bridge.send(cmd)

    @trains
    def action_pick_optimizer(self) -> None:
        current = self.query_one(StatusLine).state["optimizer"]
        self.push_screen(ChoiceScreen("Optimizer", list(specs.OPTIMIZERS), current),
                         lambda name: name and self.send(C.SetOptimizer(name)))

    @trains
    def action_pick_norm(self) -> None:
        current = self.query_one(StatusLine).state["norm"]
        self.push_screen(ChoiceScreen(f"Normalization ({self.cfg.model})",
                                      list(specs.allowed_norms(self.cfg.model)), current),
                         lambda kind: kind and self.send(C.SetNorm(kind)))

    def _ask(self, title: str, value: str, parse) -> None:
        def done(text: str | None) -> None:
            if not text:
                return
            try:
                self.send(parse(text))
            except (ConfigError, ValueError) as e:
                self.notify(str(e), severity="error")
        self.push_screen(ValueScreen(title, value), done)

    def _ask_number(self, title: str, key: str, check, command) -> None:
        """Ask for one number, shown as the status line's `key` now, checked before it is
        sent as `command`."""
        def parse(text: str):
            value = float(text)
            check(value)
            return command(value)
        self._ask(title, f"{self.query_one(StatusLine).state[key] or 0:g}", parse)

    @trains
    def action_set_lr(self) -> None:
        self._ask_number("Learning rate (> 0)", "lr", check_lr, C.SetLR)

    @trains
    def action_set_clip(self) -> None:
        def parse(text: str) -> C.SetClip:
            value = None if text.lower() in ("off", "none") else float(text)
            check_clip(value)
            return C.SetClip(value)
        clip = self.query_one(GradientsPanel).clip
        self._ask("Clip threshold (> 0, or off)", "off" if clip is None else f"{clip:g}", parse)

    @trains
    def action_set_dropout(self) -> None:
        if self.cfg.model in specs.DROPOUT_REFUSED:
            self.notify(f"no dropout in the {self.cfg.model}: "
                        f"{specs.DROPOUT_REFUSED[self.cfg.model]}", severity="warning")
            return

        self._ask_number("Dropout probability (0 to < 1; 0 is off)", "dropout", check_dropout,
                         C.SetDropout)

    @trains
    def action_set_weight_decay(self) -> None:
        self._ask_number("Weight decay (>= 0; 0 is off)", "weight_decay", check_weight_decay,
                         C.SetWeightDecay)

    @trains
    def action_toggle_pause(self) -> None:
        self.send(C.Resume() if self.status.endswith("paused") else C.Pause())

    @trains
    def action_rewind(self) -> None:
        self.send(C.Rewind())

    @trains
    def action_single_step(self) -> None:
        self.send(C.SingleStep())

    @trains
    def action_trace(self) -> None:
        self.send(C.CaptureTrace(steps=5))

    @trains
    def action_lr_find(self) -> None:
        """The learning-rate range test in a child process, then its suggestion offered
        (tuning/lrfind_screen.py); a worker, so the dashboard stays live meanwhile."""
        if any(w.group == "lr-find" and w.is_running for w in self.workers):
            self.notify("the lr range test is already running")
            return
        from lsml_tui.tui.tuning.lrfind_screen import find_and_offer
        self.run_worker(find_and_offer(self), group="lr-find", exit_on_error=False)

    async def action_export(self) -> None:
        """Write every report format for this run into its run directory, off the UI thread."""
        if self.run_dir is None:
            self.notify("no run to report yet", severity="warning")
            return
        from lsml_tui.tui.report import write_reports
        self.notify("writing reports …")
        try:
            paths = await asyncio.to_thread(write_reports, [self.run_dir])
        except Exception as e:  # a full disk or an unreadable store: say so, keep running
            self.notify(f"report failed: {type(e).__name__}: {e}", severity="error")
            return
        names = ", ".join(p.name for p in paths)
        self.query_one(EventsPanel).say(f"reports written to {paths[0].parent}: {names}", "cyan")
        self.notify(f"{paths[0]} (+ {len(paths) - 1} more)", title="report written")

    def action_toggle_log(self) -> None:
        panel = self.query_one(LossPanel)
        panel.log_scale = not panel.log_scale

    def action_toggle_smooth(self) -> None:
        panel = self.query_one(LossPanel)
        panel.smooth = not panel.smooth

    def action_next_tab(self) -> None:
        """The next of the optional panels' tabs (panels/tabs.py), where the run has them."""
        tabs = self.query("#tabs Tabs")
        if tabs:
            tabs.first().action_next_tab()
        else:
            self.notify("no tabs: this run has no DDP, theory, sharpness or noise-scale panel")

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    @trains
    def action_pick_model(self) -> None:
        if self.following:
            self.notify("this run was started elsewhere; start a new one with lsml-tui",
                        severity="warning")
            return
        async def switch(model: str | None) -> None:
            if not model:
                return
            fresh = {k: v for k, v in self.cfg.to_dict().items() if k not in MODEL_FIELDS}
            await self.fresh_run(resolve(RunConfig(**{**fresh, "model": model})))
        self.push_screen(ChoiceScreen("Restart with model", list(specs.MODEL_CONFIGS),
                                      self.cfg.model), switch)

    @trains
    async def action_restart(self) -> None:
        if self.following:
            self.notify("this run was started elsewhere; start a new one with lsml-tui",
                        severity="warning")
            return
        if self.bridge is not None and self.bridge.process.is_alive() and self.final is None:
            self.notify("the trainer is running; press m to restart with another model")
            return
        await self.fresh_run(self.cfg)
