"""The math mode of a run: fp32, fp32 with TF32 matmuls, bf16 autocast, fp16 autocast + scaler.

Weights, gradients and optimizer state stay fp32 in every mode (autocast runs
matmuls and convolutions in the low precision and keeps reductions in fp32).
fp16's narrow exponent needs a loss scale: ``torch.amp.GradScaler`` multiplies
the loss before backward and divides the gradients after it; an overflowed
step is skipped and the scale halved (the trainer shows it as an event).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from lsml_tui.trainer.config import ConfigError
from lsml_tui.trainer.optim.optimizers import parts

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_mode(name: str, device: torch.device) -> str:
    """auto -> bf16 on a GPU with bf16 tensor cores, else fp32; refuse a mode this device lacks."""
    cuda = device.type == "cuda"
    has_bf16 = cuda and torch.cuda.is_bf16_supported(including_emulation=False)
    if name == "auto":
        return "bf16" if has_bf16 else "fp32"
    if name == "tf32" and not cuda:
        raise ConfigError(f"--precision tf32 needs a CUDA GPU (TF32 is a tensor-core mode); "
                          f"this run is on {device.type}: use fp32 or bf16")
    if name in ("tf32", "bf16") and cuda and not has_bf16:     # both came with Ampere
        raise ConfigError(f"--precision {name}: {torch.cuda.get_device_name(device)} has no "
                          f"{name} tensor cores; use fp16 or fp32")
    return name


def set_tf32(on: bool) -> None:
    """TF32 for fp32 matmuls and cuDNN convolutions (process-wide), off for true fp32."""
    value = "tf32" if on else "ieee"
    if hasattr(torch.backends.cudnn, "fp32_precision"):       # torch >= 2.9
        torch.backends.cuda.matmul.fp32_precision = value
        torch.backends.cudnn.fp32_precision = value
    else:
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on


class Precision:
    """``autocast()`` around forward, ``backward(loss)``, ``unscale(optimizer)`` before clipping,
    ``update()`` after the step: each a no-op where the mode does not need it."""

    def __init__(self, name: str, device: torch.device):
        self.mode = resolve_mode(name, device)
        self.device = device
        self.dtype = DTYPES.get(self.mode)
        if device.type == "cuda":       # the fp32 left under autocast (the loss, norms) too
            set_tf32(self.mode != "fp32")
        self.scaler = torch.amp.GradScaler(device.type) if self.mode == "fp16" else None

    def autocast(self):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def unscale(self, optimizer) -> None:
        """Gradients back to their true scale, so the norm and clipping see real values."""
        if self.scaler:
            for opt in parts(optimizer):
                self.scaler.unscale_(opt)

    def update(self) -> None:
        """The next loss scale: halved after an overflow, doubled after 2000 clean steps."""
        if self.scaler:
            self.scaler.update()

    def loss_scale(self) -> float | None:
        return self.scaler.get_scale() if self.scaler else None   # a device sync: rare use
