"""``Trainer(..., callbacks=[LsmlTuiCallback()])``: a Hugging Face run recorded by lsml-tui.

The loss comes from the trainer's logs (every ``logging_steps``: set it to 1 for a loss
every step), the evaluation loss from its evaluations, the learning rate and clipping
(``max_grad_norm``) as the optimizer and ``clip_grad_norm_`` see them. The dashboard's
stop sets ``control.should_training_stop``. The main process records.
"""

from __future__ import annotations

try:
    from transformers import TrainerCallback
except ImportError:
    raise ImportError("lsml_tui.integrations.transformers needs Hugging Face transformers; "
                      "install it with: pip install 'lsml-tui[transformers]'") from None

from lsml_tui.trainer.watch.run import WatchedRun
from lsml_tui.trainer.watch.setup import callback_options


class LsmlTuiCallback(TrainerCallback):
    """Records the training as an lsml-tui run (``runs_dir/<id>/``; under ``lsml-tui run``
    the dashboard's). Arguments as ``lsml_tui.watch``'s; `config` defaults to the
    training arguments that differ from their defaults."""

    def __init__(self, name: str | None = None, config: dict | None = None,
                 runs_dir="runs", sample_every: int = 100, profile: bool = True):
        self.options = callback_options(name, config, runs_dir, sample_every, profile)
        self.run: WatchedRun | None = None

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if not state.is_world_process_zero or model is None or optimizer is None:
            return
        inner = getattr(optimizer, "optimizer", optimizer)     # accelerate's wrapper
        config = self.options["config"]
        if config is None:
            config = {k: v for k, v in args.to_dict().items()
                      if k in ("learning_rate", "per_device_train_batch_size", "max_steps",
                               "num_train_epochs", "weight_decay", "max_grad_norm",
                               "gradient_accumulation_steps", "lr_scheduler_type", "seed")}
        self.run = WatchedRun(model, inner, **{**self.options, "config": config})

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.run is not None and logs and "loss" in logs:
            self.run.log(loss=logs["loss"])

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.run is not None and metrics and "eval_loss" in metrics:
            self.run.log(val_loss=metrics["eval_loss"])

    def on_step_end(self, args, state, control, **kwargs):
        if self.run is not None and self.run.should_stop:
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        if self.run is not None:
            self.run.finish()
