"""Saved-activation bytes per module equal analytic counts (fp32 = 4 bytes, int64 = 8)."""

import torch
import torch.nn.functional as F

from lsml_tui.profilers.memory import OUTSIDE, SavedActivationMeter, memory_breakdown
from lsml_tui.trainer import specs
from lsml_tui.trainer.models import MODELS


def measure(model, x, loss_fn):
    with SavedActivationMeter(model) as meter:
        loss = loss_fn(model(x))
    loss.backward()
    return dict(meter.by_module), meter.total


def test_mlp_saved_bytes_per_module():
    B, D, W, C = 8, 32, 16, 10
    m = MODELS["mlp"](specs.MLPConfig(in_dim=D, layers=2, width=W, classes=C, norm="none"))
    y = torch.randint(C, (B,))
    by, total = measure(m, torch.randn(B, D), lambda out: F.cross_entropy(out, y))
    assert by == {
        "blocks.0.fc": B * D * 4,        # its input x (the weight is a parameter: excluded)
        "blocks.0.act": B * W * 4,       # ReLU keeps its output; blocks.1.fc's input is the
        "blocks.1.act": B * W * 4,       # same storage, so it is counted once, here
        OUTSIDE: B * C * 4 + B * 8 + 4,  # log-softmax output, int64 targets, total weight
    }
    assert total == 1024 + 512 + 512 + 388        # 320 + 64 + 4 for the loss


def test_cnn_saved_bytes_per_module():
    B, S, C, K = 4, 16, 8, 10
    m = MODELS["cnn"](specs.CNNConfig(image_size=S, layers=2, width=C, classes=K, norm="none"))
    y = torch.randint(K, (B,))
    by, _ = measure(m, torch.randn(B, 1, S, S), lambda out: F.cross_entropy(out, y))
    assert by == {
        "blocks.0.conv": B * 1 * S * S * 4,              # the image: 4096
        "blocks.0.act": B * C * S * S * 4,               # ReLU output (= pool input): 32768
        "blocks.0.pool": B * C * (S // 2) ** 2 * 8,      # int64 argmax indices: 16384
        "blocks.1.conv": B * C * (S // 2) ** 2 * 4,      # pooled input: 8192
        "blocks.1.act": B * C * (S // 2) ** 2 * 4,       # 8192
        "blocks.1.pool": B * C * (S // 4) ** 2 * 8,      # 4096
        "head": B * C * 4,                               # pooled features: 128
        OUTSIDE: B * K * 4 + B * 8 + 4,
    }


def transformer_saved_bytes(B, T, d, L, h, V):
    """The documented formula (layer norm, fp32, CPU attention kernel)."""
    BTd, BT = B * T * d, B * T
    norm = 4 * (BTd + 2 * BT)            # its input, mean and rstd
    per_layer = (2 * norm                # norm1, norm2
                 + 4 * BTd               # qkv's input
                 + 4 * 3 * BTd           # the QKV output (q, k, v are views of it)
                 + 4 * B * h * T         # attention's logsumexp
                 + 4 * BTd               # attention's output (also proj's input)
                 + 4 * BTd               # fc's input
                 + 4 * 4 * BTd           # GELU's input
                 + 4 * 4 * BTd)          # proj's input
    embeddings = 8 * BT + 8 * T          # int64 token ids and positions
    final = norm + 4 * BTd               # final norm, head input
    loss = 4 * BT * V + 8 * BT + 4       # log-softmax output, targets, total weight
    return L * per_layer + embeddings + final + loss


def test_transformer_total_matches_the_formula():
    B, T, d, L, h, V = 2, 16, 32, 2, 4, 50
    m = MODELS["transformer"](specs.TransformerConfig(vocab_size=V, layers=L, width=d, heads=h,
                                                      seq_len=T))
    y = torch.randint(V, (B, T))
    _, total = measure(m, torch.randint(V, (B, T)),
                       lambda out: F.cross_entropy(out.flatten(0, 1), y.flatten()))
    assert total == transformer_saved_bytes(B, T, d, L, h, V)


def test_no_grad_saves_nothing_and_parameters_never_count():
    m = MODELS["mlp"](specs.MLPConfig(layers=1, width=8))
    with SavedActivationMeter(m) as meter, torch.no_grad():
        m(torch.randn(4, 32))
    assert meter.total == 0


def test_memory_breakdown_of_adam():
    m = MODELS["mlp"](specs.MLPConfig(in_dim=32, layers=1, width=8, classes=10))
    n = 32 * 8 + 8 + 8 * 10 + 10                         # 354 parameters
    opt = torch.optim.Adam(m.parameters())
    F.cross_entropy(m(torch.randn(4, 32)), torch.randint(10, (4,))).backward()
    opt.step()
    mem = memory_breakdown(m, opt.state, saved_activation_bytes=123)
    # Adam keeps exp_avg and exp_avg_sq (2 x 4 bytes per parameter) and a
    # 4-byte step counter per parameter tensor (4 tensors)
    assert mem == {"param_bytes": 4 * n, "grad_bytes": 4 * n,
                   "optimizer_state_bytes": 2 * 4 * n + 4 * 4, "saved_activation_bytes": 123}
