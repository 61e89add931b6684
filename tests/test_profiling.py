"""Gradients, clip events, non-finite gradients, timing, traces, system load (MFU peaks: test_peaks.py)."""

import json
import math

import torch
import torch.nn.functional as F

from lsml_tui.profilers import gradients, system
from lsml_tui.trainer import commands as C
from lsml_tui.trainer import specs
from lsml_tui.trainer.events import (ClipEvent, FlopTable, LayerStats, MemorySample,
                                     NonFiniteGradients, TimingSample, TraceCaptured)
from lsml_tui.trainer.loop import Trainer
from lsml_tui.trainer.models import MODELS
from lsml_tui.trainer.store.reader import open_run
from tests.test_trainer import quick, run_with


def test_per_parameter_grad_norms_and_update_ratios_match_plain_torch():
    m = MODELS["mlp"](specs.MLPConfig(layers=2, width=8))
    params = list(m.parameters())
    F.cross_entropy(m(torch.randn(4, 32)), torch.randint(10, (4,))).backward()
    norms = gradients.grad_norms(params)
    assert torch.allclose(norms, torch.stack([p.grad.norm() for p in params]))
    before = gradients.snapshot(params)
    with torch.no_grad():
        for p in params:
            p.mul_(1.5)                  # an update of +50%: ||0.5 w|| / ||w|| = 0.5
    assert torch.allclose(gradients.update_ratios(before, params), torch.full((len(params),), 0.5))


def test_the_first_non_finite_gradient_in_module_order_is_named():
    m = MODELS["mlp"](specs.MLPConfig(layers=2, width=8))
    names = [n for n, _ in m.named_parameters()]
    params = list(m.parameters())
    F.cross_entropy(m(torch.randn(4, 32)), torch.randint(10, (4,))).backward()
    assert gradients.first_nonfinite(names, gradients.grad_norms(params).tolist()) is None
    params[5].grad[0] = math.inf      # head.bias
    params[2].grad[0, 0] = math.nan   # blocks.1.fc.weight comes first
    norms = gradients.grad_norms(params).tolist()
    assert gradients.first_nonfinite(names, norms) == "blocks.1.fc.weight"


def test_every_clipped_step_is_an_event_with_its_scale_and_is_stored(tmp_path):
    cfg = quick(tmp_path, clip=0.05, steps=40)
    trainer, rec, st = run_with(cfg)
    clips = rec.of(ClipEvent)
    with open_run(st.run_dir) as r:
        stored, steps = r.clips(), r.steps()
    assert len(clips) == trainer.clip_count == len(stored["step"]) == sum(steps["clipped"]) > 0
    for e in clips:
        assert e.grad_norm > e.threshold == 0.05
        assert math.isclose(e.scale, 0.05 / (e.grad_norm + 1e-6))   # clip_grad_norm_'s formula
    after = dict(zip(steps["step"], steps["grad_norm_clipped"]))
    assert all(math.isclose(after[e.step], 0.05, rel_tol=1e-4) for e in clips)
    assert trainer.summary()["clip_events"] == len(clips)


def test_a_non_finite_gradient_with_a_finite_loss_skips_the_update_and_names_it(tmp_path):
    events = []
    t = Trainer(quick(tmp_path, steps=12), sink=events.extend, event_rate=float("inf"))
    # Poison one gradient at one step through a hook on the head's weight.
    t.model.head.weight.register_hook(lambda g: g * math.nan if t.step == 5 else g)
    t.run()
    bad, = [e for e in events if isinstance(e, NonFiniteGradients)]
    assert (bad.step, bad.parameter) == (5, "head.weight")
    assert math.isfinite(bad.loss)
    assert t.status == "finished" and t.step == 12 and t.summary()["skipped_steps"] == 1
    assert all(torch.isfinite(p).all() for p in t.model.parameters())


def test_sampled_steps_emit_layer_memory_timing_and_the_flop_table_once(tmp_path):
    cfg = quick(tmp_path, steps=25, sample_every=10)
    trainer, rec, st = run_with(cfg)
    layer = rec.of(LayerStats)
    assert [e.step for e in layer] == [0, 10, 20]            # ceil(25 / 10) samples
    assert layer[0].names == trainer.param_names and len(layer[0].grad_norms) == len(trainer.params)
    assert all(r > 0 for r in layer[0].update_ratios)
    timing = rec.of(TimingSample)
    assert set(timing[0].phases) == {"data", "forward", "backward", "optimizer"}
    assert all(v >= 0 for v in timing[0].phases.values())
    flops = rec.of(FlopTable)
    assert len(flops) == 1 and flops[0].input_shape == [cfg.batch_size, 32]
    mem = rec.of(MemorySample)[-1]
    assert mem.saved_activation_bytes == sum(layer[-1].saved_bytes.values()) > 0
    with open_run(st.run_dir) as r:
        assert [s["step"] for s in r.samples("LayerStats")] == [0, 10, 20]
        assert r.samples("FlopTable")[0]["forward"] == flops[0].forward
        summary = r.info().summary
    for key in ("flops_forward_per_step", "flops_backward_per_step", "peak_saved_activation_bytes",
                "param_bytes", "grad_bytes", "optimizer_state_bytes", "clip_events",
                "last_grad_norm"):
        assert summary[key] is not None, key
    assert summary["flops_forward_per_step"] == flops[0].forward


def test_a_norm_switch_recounts_the_flops(tmp_path):
    cfg = quick(tmp_path, steps=30, sample_every=1000)
    trainer, rec, _ = run_with(cfg, [(10, C.SetNorm("layer"))])
    tables = rec.of(FlopTable)
    assert [t.step for t in tables][0] == 0 and len(tables) == 2 and tables[1].step > 10


def test_capture_trace_writes_a_chrome_trace_into_the_run_dir(tmp_path):
    cfg = quick(tmp_path, steps=20)
    trainer, rec, st = run_with(cfg, [(3, C.CaptureTrace(steps=3))])
    done, = rec.of(TraceCaptured)
    trace = json.loads(open(done.path).read())
    assert done.steps == 3 and str(st.run_dir) in done.path
    assert any(e.get("name") == "aten::addmm" for e in trace["traceEvents"])


def test_without_nvml_every_gpu_field_is_na_and_nothing_raises(monkeypatch):
    import pynvml

    def fail():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", fail)
    sampler = system.SystemSampler(lambda s: None)
    assert not sampler.has_nvml
    sample = sampler.sample()
    assert sample["gpus"] == [] and sample["rss_bytes"] > 0
    assert 0 <= sample["cpu_percent"] <= 100


def test_a_gpu_query_that_fails_reads_as_na():
    class FlakyNVML:
        NVML_TEMPERATURE_GPU = 0

        def nvmlDeviceGetCount(self):
            return 1

        def nvmlDeviceGetHandleByIndex(self, i):
            return object()

        def nvmlDeviceGetName(self, h):
            return b"Fake GPU"

        def nvmlDeviceGetMemoryInfo(self, h):
            raise RuntimeError("not supported")

        nvmlDeviceGetUtilizationRates = nvmlDeviceGetMemoryInfo
        nvmlDeviceGetTemperature = lambda self, h, kind: 61          # noqa: E731
        nvmlDeviceGetPowerUsage = lambda self, h: 150_000            # noqa: E731  (milliwatts)

    gpu, = system.gpu_samples(FlakyNVML())
    assert gpu["name"] == "Fake GPU" and gpu["temperature_c"] == 61 and gpu["power_w"] == 150.0
    assert str(gpu["util_percent"]) == "N/A" and f"{gpu['memory_used_bytes']:>5.1f}" == "  N/A"
    assert math.isnan(gpu["memory_total_bytes"] + 1)
