"""Decoder-only transformer, GPT-2 style, after nanoGPT's model.py."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from lsml_tui.trainer.models.norms import NormSlot
from lsml_tui.trainer.specs import TransformerConfig


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)   # d -> 3d, with bias
        self.proj = nn.Linear(cfg.width, cfg.width)      # d -> d

    def forward(self, x):  # (B, T, C) -> (B, T, C)
        B, T, C = x.shape
        hs = C // self.heads                                 # head size
        # (B, T, 3C) -> 3 x (B, T, C); under tensor parallel this rank's heads only,
        # 3 x (B, T, C/N) (parallel/tp.py orders the qkv rows so its chunk is its heads')
        q, k, v = self.qkv(x).chunk(3, dim=2)
        q, k, v = (t.view(B, T, -1, hs).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, -1))


class FeedForward(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.width, 4 * cfg.width)    # d -> 4d
        self.act = nn.GELU()
        self.proj = nn.Linear(4 * cfg.width, cfg.width)  # 4d -> d

    def forward(self, x):  # (B, T, C) -> (B, T, C)
        return self.proj(self.act(self.fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.norm1 = NormSlot(cfg.width, cfg.norm)
        self.attn = CausalSelfAttention(cfg)
        self.norm2 = NormSlot(cfg.width, cfg.norm)
        self.mlp = FeedForward(cfg)
        self.drop = nn.Dropout(cfg.dropout)     # on each residual branch (nanoGPT's resid_dropout)

    def forward(self, x):  # pre-norm residual block, (B, T, C)
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.mlp(self.norm2(x)))


class Transformer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.width)
        self.pos_emb = nn.Embedding(cfg.seq_len, cfg.width)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.layers)])
        self.norm_f = NormSlot(cfg.width, cfg.norm)
        self.head = nn.Linear(cfg.width, cfg.vocab_size, bias=False)  # untied
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.layers))

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    def forward(self, idx):  # (B, T) token ids -> (B, T, vocab) logits
        T = idx.shape[1]
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm_f(x))
