"""The noise-scale panel on scripted events: only with --noise-scale-every; B_simple against the
batch, what the batch costs in steps and examples, and the verdict for each regime."""

from lsml_tui.trainer.config import RunConfig
from lsml_tui.trainer.validate import resolve
from lsml_tui.trainer.events import NoiseSample, RunStarted
from lsml_tui.tui.panels import NoiseScalePanel

from tests.conftest import drawn


def config(tmp_path, **kw):
    kw = {"model": "mlp", "batch_size": 64, "noise_scale_every": 10, **kw}
    return resolve(RunConfig(runs_dir=str(tmp_path), **kw))


def sample(step, b_simple, batch=64):
    trace = None if b_simple is None else 4.0 * b_simple   # with |G|^2 = 4
    return NoiseSample(step, b_simple, 4.0, trace, batch, batch // 4, 0.02)


def shown(cfg, events):
    return drawn(cfg, events, NoiseScalePanel, lambda panel: (
        str(panel.query_one("#noise-text").render()), list(panel.history)))


def test_a_batch_below_the_noise_scale_still_pays(tmp_path):
    events = [RunStarted(0, "r", "", {}, 32, "cpu"), sample(9, None),
              *(sample(step, 100.0 + step) for step in (19, 29, 39))]
    text, history = shown(config(tmp_path), events)
    # B_simple 139 vs batch 64: 64/139 = 0.46x; steps 1 + 139/64 = 3.17x, examples 1 + 64/139 = 1.46x
    assert "B_simple 139 vs batch 64 (0.46x)" in text
    assert "this batch: 3.2x the fewest steps, 1.5x the fewest examples" in text
    assert "a larger batch (or more workers) still cuts the steps" in text
    assert history == [119.0, 129.0, 139.0]                 # the undefined first one is not drawn


def test_a_batch_past_the_noise_scale_buys_little(tmp_path):
    text, _ = shown(config(tmp_path), [sample(9, 20.0)])
    # 64 > 2 * 20; steps 1 + 20/64 = 1.31x, examples 1 + 64/20 = 4.2x
    assert "1.3x the fewest steps, 4.2x the fewest examples" in text
    assert "past the noise scale" in text


def test_waiting_undefined_and_absent(tmp_path):
    text, _ = shown(config(tmp_path), [])
    assert text.startswith("waiting for the first measurement (every 10 steps)")
    text, _ = shown(config(tmp_path), [sample(9, None)])
    assert "no estimate yet" in text
    assert shown(config(tmp_path, noise_scale_every=None), [sample(9, 50.0)]) is None
