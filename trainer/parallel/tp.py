"""--parallel tp: tensor parallelism with DTensor (``parallelize_module``), Megatron's split.

Every rank sees the same batch and holds 1/N of each split layer. In each transformer
block, attention is split by heads (the qkv projection column-parallel, each rank computing
its heads; the output projection row-parallel, its partial sums all-reduced) and the MLP
column then row (fc column-parallel, its GELU local; proj row-parallel, all-reduced): two
all-reduces of B x T x C activations per block forward and two in backward (Shoeybi et al.
2019). The embeddings, norms and head stay whole on every rank. The MLP family pairs its
hidden layers the same way: column, row, column, ... and a row-parallel head after an odd
one out. What each family allows is checked before anything starts (validate.py).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor.parallel import (ColwiseParallel, RowwiseParallel,
                                               parallelize_module)

from lsml_tui.trainer.parallel.sharded import Sharded


def heads_first(qkv: nn.Linear, n: int) -> None:
    """Order the fused qkv projection's rows [q_0 k_0 v_0 | q_1 k_1 v_1 | ...] so that the
    r-th of n contiguous chunks (what ColwiseParallel gives rank r) is rank r's heads' q, k, v
    (the rows start as [q | k | v], each C rows)."""
    c = qkv.out_features // 3
    order = torch.arange(3 * c).view(3, n, c // n).transpose(0, 1).reshape(-1)
    with torch.no_grad():
        qkv.weight.copy_(qkv.weight[order])
        qkv.bias.copy_(qkv.bias[order])


def plan(model: nn.Module, family: str, n: int) -> dict:
    """Which Linear is split how: {module name: ColwiseParallel() | RowwiseParallel()}."""
    out = {}
    if family == "transformer":
        for i, block in enumerate(model.blocks):
            heads_first(block.attn.qkv, n)
            out |= {f"blocks.{i}.attn.qkv": ColwiseParallel(),
                    f"blocks.{i}.attn.proj": RowwiseParallel(),
                    f"blocks.{i}.mlp.fc": ColwiseParallel(),
                    f"blocks.{i}.mlp.proj": RowwiseParallel()}
        return out
    for i, _ in enumerate(model.blocks):                    # mlp: column, row, column, ...
        out[f"blocks.{i}.fc"] = ColwiseParallel() if i % 2 == 0 else RowwiseParallel()
    if len(model.blocks) % 2:                               # the last hidden layer's output
        out["head"] = RowwiseParallel()                     # is split: the head sums it
    return out


class TensorParallel(Sharded):
    """One rank of a tensor-parallel run: the same batch as every other rank."""

    replicas = True         # the layers left whole (embeddings, norms, head) are replicas
    data_parallel = False   # every rank draws rank 0's batches: one process's

    def wrap(self, model: nn.Module) -> nn.Module:
        mesh = init_device_mesh(self.device.type, (self.size,))
        self.plan = plan(model, self.cfg.model, self.size)
        return parallelize_module(model, mesh, self.plan)

    def comm_predicted(self, trainer) -> list[float]:
        """Megatron's: each row-parallel layer all-reduces its output in forward, each
        column-parallel one its input's gradient in backward (not the MLP's first layer:
        its input is the data), 2(N-1)/N x the activation's bytes each; in a transformer
        block two of each, of B x T x C."""
        n, cfg = self.size, self.cfg
        tokens = cfg.batch_size * (cfg.seq_len if cfg.model == "transformer" else 1)
        # activations in the weights' dtype: under autocast some cross in half precision
        # (a Linear's output), some not (the gradient of a norm's output), fewer bytes
        size = trainer.params[0].element_size()
        elements = 0
        for name, style in self.plan.items():
            layer = trainer.model.get_submodule(name)
            if isinstance(style, RowwiseParallel):
                elements += tokens * layer.out_features
            elif name != "blocks.0.fc":
                elements += tokens * layer.in_features
        return [2 * (n - 1) / n * elements * size] * n
