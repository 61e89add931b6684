"""Which rank class each --parallel mode runs: ``join`` starts this process's rank of it."""

from __future__ import annotations

from lsml_tui.trainer.parallel import ddp
from lsml_tui.trainer.parallel.fsdp import FullyShardedParallel
from lsml_tui.trainer.parallel.pipeline import PipelineParallel
from lsml_tui.trainer.parallel.tp import TensorParallel

MODES = {"ddp": ddp.DataParallel, "zero1": ddp.DataParallel, "fsdp": FullyShardedParallel,
         "tp": TensorParallel, "pp": PipelineParallel}


def join(cfg) -> ddp.DataParallel:
    """This process's rank of the run's --parallel mode, its process group started."""
    return ddp.join(cfg, MODES[cfg.parallel])
