"""MFU peaks: the GPU table by device name and math mode, the measured and cached CPU peak."""

import json
import math
import time

import pytest
import torch

from lsml_tui.profilers import peaks

T = 1e12
# Expected values are the data sheets' figures, dense: a sheet's sparse "*" figure halved.
CASES = [
    # H100 data sheet, SXM column: FP32 67, TF32 989*, BF16 1979*, FP16 1979*
    ("NVIDIA H100 80GB HBM3", "H100 SXM", "bf16", 989.5 * T),
    ("NVIDIA H100 80GB HBM3", "H100 SXM", "tf32", 494.5 * T),
    ("NVIDIA H100 80GB HBM3", "H100 SXM", "fp32", 67 * T),
    # H100 data sheet, PCIe column: FP32 51, BF16 1513*
    ("NVIDIA H100 PCIe", "H100 PCIe", "bf16", 756.5 * T),
    ("NVIDIA H100 PCIe", "H100 PCIe", "fp32", 51 * T),
    # H100 data sheet, NVL column: BF16 1671*, TF32 835*
    ("NVIDIA H100 NVL", "H100 NVL", "bf16", 835.5 * T),
    ("NVIDIA H100 NVL", "H100 NVL", "tf32", 417.5 * T),
    # H200 data sheet, SXM column: FP16 1979*
    ("NVIDIA H200", "H200", "fp16", 989.5 * T),
    # H200 data sheet, NVL column: BF16 1671*
    ("NVIDIA H200 NVL", "H200 NVL", "bf16", 835.5 * T),
    # GH200 data sheet, GPU: BF16 1979*
    ("NVIDIA GH200 480GB", "GH200", "bf16", 989.5 * T),
    # A100 data sheet: FP32 19.5, TF32 156, BF16 312 (SXM4 and PCIe alike)
    ("NVIDIA A100-SXM4-80GB", "A100", "bf16", 312 * T),
    ("NVIDIA A100-PCIE-40GB", "A100", "tf32", 156 * T),
    ("NVIDIA A100-SXM4-40GB", "A100", "fp32", 19.5 * T),
    # L4 data sheet: FP32 30.3, TF32 120*, BF16 242*
    ("NVIDIA L4", "L4", "bf16", 121 * T),
    ("NVIDIA L4", "L4", "tf32", 60 * T),
    # L40S data sheet: FP32 91.6, BF16 362.05 (733*)
    ("NVIDIA L40S", "L40S", "bf16", 362.05 * T),
    ("NVIDIA L40S", "L40S", "fp32", 91.6 * T),
    # A10 data sheet: TF32 62.5, BF16 125
    ("NVIDIA A10", "A10", "bf16", 125 * T),
    ("NVIDIA A10", "A10", "tf32", 62.5 * T),
    # A10G (no NVIDIA sheet): 80 SMs x 1.71 GHz x 512 BF16 FLOP/clk/SM = 70 TFLOPS
    ("NVIDIA A10G", "A10G", "bf16", 70 * T),
    # T4 data sheet: FP32 8.1, mixed precision (FP16) 65
    ("Tesla T4", "T4", "fp16", 65 * T),
    ("Tesla T4", "T4", "fp32", 8.1 * T),
    # V100 data sheet, SXM2 column: FP32 15.7, Tensor 125
    ("Tesla V100-SXM2-16GB", "V100 SXM2", "fp16", 125 * T),
    ("Tesla V100-SXM2-16GB", "V100 SXM2", "fp32", 15.7 * T),
    # V100 data sheet, PCIe column: Tensor 112
    ("Tesla V100-PCIE-32GB", "V100 PCIe", "fp16", 112 * T),
    # Ada whitepaper, RTX 4090: BF16 with FP32 accumulate 165.2 (330.4*), TF32 82.6
    ("NVIDIA GeForce RTX 4090", "RTX 4090", "bf16", 165.2 * T),
    ("NVIDIA GeForce RTX 4090", "RTX 4090", "tf32", 82.6 * T),
    # GA102 whitepaper, RTX 3090: BF16 with FP32 accumulate 71 (142*), FP32 35.6
    ("NVIDIA GeForce RTX 3090", "RTX 3090", "bf16", 71 * T),
    ("NVIDIA GeForce RTX 3090", "RTX 3090", "fp32", 35.6 * T),
]


@pytest.mark.parametrize("name, model, mode, peak", CASES)
def test_cuda_peak_table(name, model, mode, peak):
    assert peaks.gpu_model(name) == model
    assert peaks.cuda_peak(name, mode) == pytest.approx(peak)


def test_the_three_h100s_have_three_different_bf16_peaks():
    names = ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100 NVL")
    assert len({peaks.gpu_model(n) for n in names}) == 3
    assert len({peaks.cuda_peak(n, "bf16") for n in names}) == 3


def test_an_unknown_gpu_or_missing_mode_gives_none():
    assert peaks.gpu_model("Some Future GPU") is None
    assert peaks.cuda_peak("Some Future GPU", "bf16") is None
    assert peaks.cuda_peak("Tesla V100-SXM2-16GB", "bf16") is None   # Volta: no bf16 / tf32
    assert peaks.cuda_peak("Tesla V100-SXM2-16GB", "tf32") is None
    with pytest.raises(ValueError):
        peaks.cuda_peak("NVIDIA L4", "int8")


def test_peak_flops_defaults_to_fp32_and_is_none_off_cpu_and_cuda(monkeypatch):
    monkeypatch.setattr(peaks, "cpu_peak", lambda mode="fp32": {"fp32": 1.0, "bf16": 2.0}[mode])
    assert peaks.peak_flops(torch.device("cpu")) == 1.0
    assert peaks.peak_flops(torch.device("cpu"), "bf16") == 2.0
    assert peaks.peak_flops(torch.device("meta")) is None


def test_cpu_peak_is_measured_once_per_mode_and_cached(tmp_path, monkeypatch):
    calls = []

    def fake(n=512, seconds=0.3, dtype=torch.float32):
        calls.append(dtype)
        return {torch.float32: 1.0e11, torch.bfloat16: 3.0e11}[dtype]

    monkeypatch.setattr(peaks, "measure_cpu_peak", fake)
    cache = tmp_path / "peak.json"
    assert peaks.cpu_peak("fp32", cache) == 1.0e11
    assert peaks.cpu_peak("fp32", cache) == 1.0e11
    assert peaks.cpu_peak("tf32", cache) == 1.0e11          # tf32 is fp32 on a CPU
    assert peaks.cpu_peak("bf16", cache) == 3.0e11
    assert peaks.cpu_peak("bf16", cache) == 3.0e11
    assert calls == [torch.float32, torch.bfloat16]
    known = json.loads(cache.read_text())
    assert sorted(v for v in known.values()) == [1.0e11, 3.0e11]
    assert {k.rsplit("|", 1)[1] for k in known} == {"fp32", "bf16"}
    assert not list(tmp_path.glob(".*.tmp"))                # written via a temp name + os.replace


def test_a_cpu_peak_below_what_was_achieved_is_measured_again_and_raised(tmp_path, monkeypatch):
    """A peak cached from a busy machine reads low; achieving more than it re-measures, and
    the cache keeps the largest of the old figure, the new one and the achieved FLOP/s."""
    readings = iter([2.0e10, 3.0e10, 9.0e10])            # busy, still busy, then idle
    monkeypatch.setattr(peaks, "measure_cpu_peak", lambda **kw: next(readings))
    cache = tmp_path / "peak.json"
    assert peaks.cpu_peak("fp32", cache) == 2.0e10          # the low first measurement
    assert peaks.cpu_peak("fp32", cache, at_least=1.5e10) == 2.0e10   # no reason to re-measure
    # achieved 5e10 > 2e10: measured again (3e10, still low): max(2e10, 3e10, 5e10) = 5e10
    assert peaks.cpu_peak("fp32", cache, at_least=5.0e10) == 5.0e10
    assert peaks.cpu_peak("fp32", cache) == 5.0e10          # kept
    assert peaks.cpu_peak("fp32", cache, at_least=6.0e10) == 9.0e10   # an idle machine's
    assert list(json.loads(cache.read_text()).values()) == [9.0e10]


def test_an_mfu_over_100_percent_re_measures_the_peak(monkeypatch):
    from types import SimpleNamespace

    from lsml_tui.trainer import profiling
    calls = []
    monkeypatch.setattr(profiling, "peak_flops", lambda device, mode: 1.0e9)   # read low
    monkeypatch.setattr(profiling, "cpu_peak", lambda mode, at_least: calls.append(at_least)
                        or 4.0e9)
    p = profiling.Profiler(lambda: None, torch.device("cpu"), True, 10)
    p.flops, p.step_seconds = SimpleNamespace(total=2.0e9), 1.0   # achieved 2e9 FLOP/s
    assert p.mfu() == 2.0e9 / 4.0e9 and calls == [2.0e9]          # 2e9 > 1e9: measured again
    assert p.mfu() == 0.5 and calls == [2.0e9]                    # below the new peak: not again


def test_measure_cpu_peak_in_bf16_is_positive_and_quick():
    t0 = time.perf_counter()
    peak = peaks.measure_cpu_peak(n=64, seconds=0.02, dtype=torch.bfloat16)
    assert peak > 0 and math.isfinite(peak)
    assert time.perf_counter() - t0 < 5
