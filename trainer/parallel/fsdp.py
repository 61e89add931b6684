"""--parallel fsdp: FSDP2 (``fully_shard``, ZeRO-3). Every rank holds 1/N of each block's
parameters, gradients and optimizer state; a block's weights are all-gathered for its
forward (and again for its backward when they were resharded after forward), and its
gradients reduce-scattered back to their shards.

Each block is sharded on its own and then the root (the embeddings, the head, whatever is
left), as torchtitan does: one all-gather per block, the next one's overlapping this
block's compute. ``--no-reshard-after-forward`` keeps the gathered weights from forward
to backward (ZeRO-2-like: one all-gather per block a step instead of two, more memory).
"""

from __future__ import annotations

from torch import nn
from torch.distributed.fsdp import fully_shard

from lsml_tui.trainer.parallel.sharded import Sharded


def blocks(model: nn.Module) -> list[nn.Module]:
    """The model's repeated blocks (``model.blocks``, every family that has them)."""
    return list(getattr(model, "blocks", None) or [])


class FullyShardedParallel(Sharded):
    """One rank of an FSDP2 run: data parallel (each rank its own batches), weights sharded."""

    def wrap(self, model: nn.Module) -> nn.Module:
        reshard = self.cfg.reshard_after_forward is not False
        for block in blocks(model):
            fully_shard(block, reshard_after_forward=reshard)
        fully_shard(model, reshard_after_forward=reshard)
        return model

    def comm_predicted(self, trainer) -> list[float]:
        """ZeRO-3: an all-gather of the parameters for forward, again for backward when
        resharded, and a reduce-scatter of the gradients: (N-1)/N x M each, 3 or 2 times,
        1.5x or 1x DDP's 2(N-1)/N x M."""
        n, m = self.size, sum(p.numel() * p.element_size() for p in trainer.params)
        passes = 3 if self.cfg.reshard_after_forward is not False else 2
        return [passes * (n - 1) / n * m] * n
