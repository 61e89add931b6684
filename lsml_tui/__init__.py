"""lsml-tui: a terminal training dashboard and profiler.

The code lives in three subpackages installed under this namespace:
``lsml_tui.tui`` (from ``tui/``), ``lsml_tui.trainer`` (``trainer/``) and
``lsml_tui.profilers`` (``profilers/``). Dependencies flow one way:
tui -> trainer -> profilers. This top level is the public API a user's script imports:
``lsml_tui.watch`` and ``lsml_tui.integrations`` (Lightning, Hugging Face). It imports
the trainer only when ``watch`` is called, so ``import lsml_tui`` is free.
"""

__version__ = "0.1.0"
__all__ = ["watch"]


def watch(model, optimizer, name=None, config=None, runs_dir="runs", sample_every=100,
          profile=True):
    """Record your own training loop as an lsml-tui run; returns the run.

    ``model`` is the ``torch.nn.Module`` you train, ``optimizer`` the
    ``torch.optim.Optimizer`` that updates it. Each ``optimizer.step()`` is a step. Call
    ``run.log(loss=loss, **values)`` once a step (tensors are fine: nothing is read back
    until it is cheap), check ``run.should_stop`` (the dashboard's stop), and
    ``run.finish()`` at the end, or use ``with lsml_tui.watch(...) as run:``.

    Every `sample_every` steps the FLOPs per module (forward and backward), the bytes
    autograd saves for backward, per-layer gradient norms and update ratios, the memory
    breakdown and the phase timing are measured; `profile=False` turns that off. The run is
    stored in ``runs_dir/<id>/`` (``lsml-tui runs``, ``report``, ``open`` read it); under
    ``lsml-tui run script.py`` the dashboard follows it live and commands it.

    Raises TypeError or ValueError, before anything is written, on a bad argument.
    """
    from lsml_tui.trainer.watch.run import WatchedRun
    return WatchedRun(model, optimizer, name=name, config=config, runs_dir=runs_dir,
                      sample_every=sample_every, profile=profile)
