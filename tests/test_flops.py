"""FLOPs forward and backward equal analytic counts (matmul-like ops; full attention)."""

import pytest
import torch
import torch.nn.functional as F

from lsml_tui.profilers.flops import count_flops
from lsml_tui.trainer import specs
from lsml_tui.trainer.models import MODELS


def ce(out, y):
    return F.cross_entropy(out.flatten(0, -2) if out.ndim > 2 else out, y.flatten())


@pytest.mark.parametrize("norm", ["none", "layer"])
def test_mlp_flops(norm):
    B, D, W, C = 8, 32, 16, 10
    m = MODELS["mlp"](specs.MLPConfig(in_dim=D, layers=2, width=W, classes=C, norm=norm))
    f = count_flops(m, torch.randn(B, D), torch.randint(C, (B,)), ce)
    # forward: 2 * B * (D*W + W*W + W*C) = 2 * 8 * (512 + 256 + 160) = 14848
    assert f.forward == 2 * B * (D * W + W * W + W * C) == 14848
    # backward: weight and input grads (2x forward), but the input x needs no grad: -2*B*D*W
    assert f.backward == 2 * f.forward - 2 * B * D * W == 29696 - 8192
    assert f.per_module == {
        "blocks.0.fc": (2 * B * D * W, 2 * B * D * W),      # (8192, 8192): weight grad only
        "blocks.1.fc": (2 * B * W * W, 4 * B * W * W),      # (4096, 8192)
        "head": (2 * B * W * C, 4 * B * W * C),             # (2560, 5120)
    }


def test_cnn_flops():
    B, S, C, K = 4, 16, 8, 10
    m = MODELS["cnn"](specs.CNNConfig(image_size=S, layers=3, width=C, classes=K))
    f = count_flops(m, torch.randn(B, 1, S, S), torch.randint(K, (B,)), ce)
    # conv3x3 at H x W: 2 * B * C_out * H * W * C_in * 9; each block halves the image
    conv0 = 2 * B * C * S * S * 1 * 9                    # 16x16, 1 -> 8 channels: 147456
    conv1 = 2 * B * C * (S // 2) ** 2 * C * 9            # 8x8: 294912
    conv2 = 2 * B * C * (S // 4) ** 2 * C * 9            # 4x4: 73728
    head = 2 * B * C * K                                  # 640
    assert f.forward == conv0 + conv1 + conv2 + head == 516736
    assert f.backward == 2 * f.forward - conv0           # no grad for the input image
    assert f.per_module["blocks.0.conv"] == (conv0, conv0)
    assert f.per_module["blocks.2.conv"] == (conv2, 2 * conv2)


def test_transformer_flops_per_token_match_the_documented_formula():
    B, T, d, L, h, V = 2, 16, 32, 2, 4, 50
    m = MODELS["transformer"](specs.TransformerConfig(vocab_size=V, layers=L, width=d, heads=h,
                                                      seq_len=T))
    idx, y = torch.randint(V, (B, T)), torch.randint(V, (B, T))
    f = count_flops(m, idx, y, ce)
    # per token forward: 2*(12 d^2) L  [qkv 3d^2 + proj d^2 + mlp 8d^2]   = 49152
    #                  + 4 T d L        [QK^T and AV, full, not causal-halved] = 4096
    #                  + 2 d V          [the head]                          = 3200
    dense, attention, head = 2 * 12 * d * d * L, 4 * T * d * L, 2 * d * V
    assert f.forward == B * T * (dense + attention + head) == 32 * 56448
    # backward: 2x every matmul; flash-style attention backward recomputes QK^T: 2.5x
    assert f.backward == B * T * (2 * (dense + head) + 5 * attention // 2)
    # the attention kernel's own row, counted on CPU too: 4 B h T^2 (d/h), backward 2.5x
    assert f.per_module["blocks.0.attn"] == (4 * B * T * T * d, 10 * B * T * T * d)
    assert f.per_module["blocks.0.attn.qkv"] == (2 * B * T * d * 3 * d, 4 * B * T * d * 3 * d)
    assert sum(fw for fw, _ in f.per_module.values()) == f.forward   # rows add up to the total
