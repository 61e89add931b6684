"""``Trainer(callbacks=[LsmlTuiCallback()])``: a Lightning run recorded by lsml-tui.

The loss is the training step's (its ``loss``, or the tensor it returns), the optimizer
the trainer's first, the learning rate and clipping (``gradient_clip_val``) as the
optimizer and ``clip_grad_norm_`` see them; ``val_loss`` from the logged metrics when the
module logs one. The dashboard's stop sets ``trainer.should_stop``. Rank zero records.
"""

from __future__ import annotations

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:
    try:
        from pytorch_lightning.callbacks import Callback
    except ImportError:
        raise ImportError("lsml_tui.integrations.lightning needs Lightning (lightning or "
                          "pytorch-lightning); install it with: pip install "
                          "'lsml-tui[lightning]'") from None

import torch

from lsml_tui.trainer.watch.run import WatchedRun
from lsml_tui.trainer.watch.setup import callback_options


class LsmlTuiCallback(Callback):
    """Records the fit as an lsml-tui run (``runs_dir/<id>/``; under ``lsml-tui run`` the
    dashboard's). Arguments as ``lsml_tui.watch``'s; `config` defaults to the module's
    hyper-parameters."""

    def __init__(self, name: str | None = None, config: dict | None = None,
                 runs_dir="runs", sample_every: int = 100, profile: bool = True):
        self.options = callback_options(name, config, runs_dir, sample_every, profile)
        self.run: WatchedRun | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or not trainer.optimizers:
            return
        config = self.options["config"]
        if config is None:
            config = {k: v for k, v in dict(getattr(pl_module, "hparams", {}) or {}).items()}
        # training_step need not call the module's own forward: the batch's start and
        # the backward's are the forward's bounds
        self.run = WatchedRun(pl_module, trainer.optimizers[0], forward_hooks=False,
                              **{**self.options, "config": config})

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.run is not None:
            self.run.forward_begins(_first_tensor(batch))

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if self.run is not None:
            self.run.forward_ends()

    def on_validation_start(self, trainer, pl_module) -> None:
        if self.run is not None:
            self.run.aside_begins()             # its FLOPs are not the training step's

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.run is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self.run.log(loss=loss)
        if self.run.should_stop:
            trainer.should_stop = True

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.run is None:
            return
        self.run.aside_ends()
        val = trainer.callback_metrics.get("val_loss")
        if val is not None and not trainer.sanity_checking:
            self.run.log(val_loss=val)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.run is not None:
            self.run.finish()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.run is not None:
            self.run.finish_after(exception)


def _first_tensor(batch):
    """The batch's first tensor (its first dimension is the batch's rows), or None."""
    if isinstance(batch, torch.Tensor):
        return batch
    items = batch.values() if isinstance(batch, dict) else batch \
        if isinstance(batch, (list, tuple)) else ()
    return next((t for t in (_first_tensor(b) for b in items) if t is not None), None)
