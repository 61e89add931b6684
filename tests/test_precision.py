"""Math modes, torch.compile, and the CUDA step path (trainer/precision.py, guard.py).

What runs on CPU is tested on CPU: bf16 through CPU autocast, fp16 with its
gradient scaler, compile of a small model. The CUDA tests skip without a GPU.
"""

import math

import pytest
import torch

from lsml_tui.profilers import peaks
from lsml_tui.trainer.config import ConfigError
from lsml_tui.trainer.events import NonFiniteGradients
from lsml_tui.trainer.guard import fused
from lsml_tui.trainer.loop import Trainer
from lsml_tui.trainer.precision import resolve_mode
from lsml_tui.trainer.store.reader import open_run
from lsml_tui.tui.cli import build_parser
from lsml_tui.tui.flags import config_from_args

from tests.conftest import run_cli
from tests.test_trainer import quick, run_with

CPU = torch.device("cpu")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_auto_is_fp32_on_cpu_and_tf32_is_refused_there():
    assert resolve_mode("auto", CPU) == "fp32"
    assert resolve_mode("bf16", CPU) == "bf16"
    with pytest.raises(ConfigError, match="tf32 needs a CUDA GPU"):
        resolve_mode("tf32", CPU)


@pytest.mark.parametrize("args, words", [
    (["--precision", "fp8"], ["--precision 'fp8'", "auto, fp32, tf32, bf16, fp16"]),
    (["--precision", "tf32", "--device", "cpu"], ["tf32 needs a CUDA GPU"]),
    (["--compile", "fastest"], ["--compile 'fastest'", "reduce-overhead"]),
])
def test_bad_precision_or_compile_mode_is_one_line_and_exit_2(tmp_path, args, words):
    proc = run_cli("--headless", "--runs-dir", str(tmp_path / "runs"), *args)
    assert proc.returncode == 2
    line, = proc.stderr.strip().splitlines()
    assert all(w in line for w in words), line
    assert not (tmp_path / "runs").exists()                  # refused before anything started


def test_bare_compile_flag_means_the_default_mode():
    cfg = config_from_args(build_parser().parse_args(["--compile", "--model", "mlp"]))
    assert cfg.compile == "default"
    cfg = config_from_args(build_parser().parse_args(["--compile", "reduce-overhead"]))
    assert cfg.compile == "reduce-overhead"


def test_bf16_runs_matmuls_in_bfloat16_on_cpu_and_mfu_uses_the_bf16_peak(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    fake = {torch.float32: 1.0e11, torch.bfloat16: 4.0e11}       # FLOP/s, per dtype
    monkeypatch.setattr(peaks, "measure_cpu_peak",
                        lambda n=512, seconds=0.3, dtype=torch.float32: fake[dtype])
    seen = []

    def watch(trainer):
        first = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Linear))
        first.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    trainer, _, _ = run_with(quick(tmp_path, precision="bf16", steps=120, width=64), prepare=watch)
    s = trainer.summary()
    assert s["precision"] == "bf16" and set(seen) == {torch.bfloat16}
    assert s["final_train_loss"] < s["initial_train_loss"]       # it learns in bf16
    assert s["peak_flops_per_second"] == 4.0e11
    assert s["mfu"] == pytest.approx(s["achieved_flops_per_second"] / 4.0e11)


def test_fp16_overflow_skips_the_update_halves_the_scale_and_training_goes_on(tmp_path):
    init = 2.0 ** 40                    # far above fp16's max (65504): the first steps overflow

    def big_scale(trainer):
        trainer.precision.scaler = torch.amp.GradScaler("cpu", init_scale=init)
    trainer, rec, st = run_with(quick(tmp_path, precision="fp16", steps=60, skip_limit=2),
                                prepare=big_scale)
    skips = rec.of(NonFiniteGradients)
    assert skips and all(e.parameter == "(fp16 overflow)" for e in skips)
    assert [e.step for e in skips[:3]] == [0, 1, 2]   # more than --skip-limit in a row: not
    for i, e in enumerate(skips):                     # a divergence. Each overflow halves the
        assert e.message.endswith(f"loss scale now {init / 2 ** (i + 1):g}")   # scale (no
                                                      # growth before 2000 clean steps)
    assert trainer.status == "finished" and trainer.skipped_steps == len(skips)
    with open_run(st.run_dir) as r:
        steps = r.steps()
    assert steps["step"] == list(range(60))
    skipped = {e.step for e in skips}
    for step, norm in zip(steps["step"], steps["grad_norm"]):   # a skip has no norm (NULL)
        assert (norm is None) == (step in skipped)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_compile_trains_like_eager_and_profiled_steps_still_measure(tmp_path):
    torch._dynamo.reset()
    base = dict(steps=30, sample_every=10, val_every=15)
    eager, _, _ = run_with(quick(tmp_path, **base))
    compiled, _, _ = run_with(quick(tmp_path, compile="default", **base))
    assert compiled.fast is not compiled.net                   # a compiled module trained
    e, c = eager.summary(), compiled.summary()
    assert c["compile"] == "default"
    assert c["flops_forward_per_step"] == e["flops_forward_per_step"] > 0   # counted eager
    assert c["peak_saved_activation_bytes"] == e["peak_saved_activation_bytes"] > 0
    assert c["final_train_loss"] == pytest.approx(e["final_train_loss"], rel=1e-3)


# -- CUDA ------------------------------------------------------------------------

@cuda
@pytest.mark.parametrize("model", ["mlp", "cnn", "rnn", "transformer"])
@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_an_ordinary_cuda_step_never_synchronises(tmp_path, model, precision):
    cfg = quick(tmp_path, model=model, layers=None, width=None, precision=precision,
                device="cuda", steps=10**6, sample_every=1000, val_every=10**6)
    trainer = Trainer(cfg)
    assert fused(trainer.optimizer)                             # adam: fused on CUDA
    for _ in range(3):                                          # FLOP count, first steps
        trainer.advance()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            assert trainer.advance()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    trainer.settle(0)
    assert math.isfinite(trainer.recent_losses[-1])


@cuda
def test_auto_is_bf16_on_a_gpu_that_has_it_and_mfu_divides_by_that_peak(tmp_path):
    trainer, _, _ = run_with(quick(tmp_path, device="cuda", steps=20))
    s = trainer.summary()
    expect = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp32"
    assert s["precision"] == expect
    assert s["peak_flops_per_second"] == peaks.cuda_peak(torch.cuda.get_device_name(), expect)


@cuda
@pytest.mark.parametrize("model", ["mlp", "transformer"])
def test_saved_activation_bytes_match_what_the_cuda_allocator_holds(tmp_path, model):
    """After forward, the memory allocated beyond the model is what autograd saved (and the
    loss): the meter's count must agree within the allocator's 512-byte rounding."""
    from lsml_tui.profilers.memory import SavedActivationMeter
    cfg = quick(tmp_path, model=model, layers=None, width=None, device="cuda", precision="bf16")
    trainer = Trainer(cfg)
    trainer.advance()                   # cuBLAS workspaces, optimizer state: allocated once
    trainer.settle(0)
    x, y = trainer.task.batch("train", cfg.batch_size, trainer.gen)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    with SavedActivationMeter(trainer.model) as meter, trainer.precision.autocast():
        loss = trainer.task.loss(trainer.model(x), y)
    torch.cuda.synchronize()
    held = torch.cuda.memory_allocated() - before
    tensors = meter.count + 1                                  # saved storages and the loss
    # the batch is allocated before: saved as it is (token ids, targets) it is in the count
    # but not in `held`
    batch = sum(t.untyped_storage().nbytes() for t in (x, y))
    assert meter.total - batch <= held <= meter.total + 512 * tensors
    loss.backward()
