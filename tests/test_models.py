"""Model shapes, the norm slot, and the hand-written recurrent cells against torch's own."""

import pytest
import torch
from torch import nn

from lsml_tui.trainer import specs
from lsml_tui.trainer.models import MODELS, NormSlot, set_norm
from lsml_tui.trainer.models.rnn import RecurrentLayer


def small(model):
    cfg = {"mlp": specs.MLPConfig(layers=2, width=16),
           "cnn": specs.CNNConfig(layers=2, width=8),
           "rnn": specs.RNNConfig(width=8, seq_len=5),
           "transformer": specs.TransformerConfig(vocab_size=11, layers=1, width=16, heads=2,
                                                  seq_len=6),
           "linear": specs.LinearConfig(dim=4)}[model]
    return MODELS[model](cfg), cfg


def example_input(model, cfg, batch=3):
    return {"mlp": lambda: torch.randn(batch, cfg.in_dim),
            "cnn": lambda: torch.randn(batch, 1, cfg.image_size, cfg.image_size),
            "rnn": lambda: torch.randn(batch, cfg.seq_len, cfg.in_dim),
            "transformer": lambda: torch.randint(cfg.vocab_size, (batch, cfg.seq_len)),
            "linear": lambda: torch.randn(batch, cfg.dim)}[model]()


@pytest.mark.parametrize("model, out_shape", [
    ("mlp", (3, 10)), ("cnn", (3, 10)), ("rnn", (3, 1)), ("transformer", (3, 6, 11)),
    ("linear", (3, 1))])
def test_forward_shapes(model, out_shape):
    m, cfg = small(model)
    assert m(example_input(model, cfg)).shape == out_shape


@pytest.mark.parametrize("model", [m for m in MODELS if m not in ("linear", "rff")])  # no norm
def test_every_allowed_norm_swaps_in_as_identity_affine_and_trains(model):  # slot there
    m, cfg = small(model)
    x = example_input(model, cfg)
    for kind in specs.allowed_norms(model):
        n_slots = set_norm(m, kind)
        slots = [s for s in m.modules() if isinstance(s, NormSlot)]
        assert n_slots == len(slots) > 0
        assert all(s.kind == kind for s in slots)
        for s in slots:
            if getattr(s.norm, "weight", None) is not None:
                assert torch.equal(s.norm.weight, torch.ones_like(s.norm.weight))
            if getattr(s.norm, "bias", None) is not None:
                assert torch.equal(s.norm.bias, torch.zeros_like(s.norm.bias))
        m(x).float().sum().backward()   # the swapped-in norms are part of the graph


def test_norm_none_is_identity_and_layer_norm_normalizes():
    slot = NormSlot(8, "none")
    x = torch.randn(4, 8) * 5 + 3
    assert torch.equal(slot(x), x)
    slot.set_kind("layer", torch.device("cpu"))
    y = slot(x)
    assert torch.allclose(y.mean(-1), torch.zeros(4), atol=1e-5)
    assert torch.allclose(y.var(-1, unbiased=False), torch.ones(4), atol=1e-3)


@pytest.mark.parametrize("cell, torch_cls", [("rnn", nn.RNN), ("gru", nn.GRU), ("lstm", nn.LSTM)])
def test_hand_written_cells_match_torch(cell, torch_cls):
    torch.manual_seed(0)
    ours = RecurrentLayer(cell, d_in=3, hidden=5, norm="none")
    ref = torch_cls(3, 5, batch_first=True)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(ours.ih.weight)
        ref.bias_ih_l0.copy_(ours.ih.bias)
        ref.weight_hh_l0.copy_(ours.hh.weight)
        ref.bias_hh_l0.copy_(ours.hh.bias if ours.hh.bias is not None else torch.zeros(ref.bias_hh_l0.shape))
    x = torch.randn(2, 7, 3)
    assert torch.allclose(ours(x), ref(x)[0], atol=1e-6)


def test_transformer_is_causal():
    m, cfg = small("transformer")
    m.eval()
    idx = torch.randint(cfg.vocab_size, (1, cfg.seq_len))
    changed = idx.clone()
    changed[0, 4:] = (idx[0, 4:] + 1) % cfg.vocab_size  # change only the future of position 3
    with torch.no_grad():
        a, b = m(idx), m(changed)
    assert torch.allclose(a[0, :4], b[0, :4], atol=1e-6)
    assert not torch.allclose(a[0, 4:], b[0, 4:])


def test_transformer_layout_matches_gpt2():
    m, cfg = small("transformer")
    block = m.blocks[0]
    d = cfg.width
    assert block.attn.qkv.weight.shape == (3 * d, d) and block.attn.qkv.bias is not None
    assert block.attn.proj.weight.shape == (d, d)
    assert block.mlp.fc.weight.shape == (4 * d, d) and block.mlp.proj.weight.shape == (d, 4 * d)
    assert m.head.weight.shape == (cfg.vocab_size, d) and m.head.bias is None
    assert m.head.weight.data_ptr() != m.tok_emb.weight.data_ptr()  # untied
