"""Default tasks, generated in-process; nothing is downloaded.

- mlp: 10-class labels from a fixed random teacher network on Gaussian inputs.
- cnn: small images of 10 procedurally drawn shapes.
- rnn: the adding problem (Hochreiter & Schmidhuber, 1997): sum the two marked
  values of a long sequence; long sequences expose exploding/vanishing gradients.
- transformer: character-level language modelling on the Python standard
  library's own source (every machine has it), or on ``--text PATH``.
- linear: least squares whose Hessian has an exact, chosen spectrum (L = 1,
  mu = 1/kappa), so optimization theory's predictions can be checked live.

Every task is seeded, so a fixed seed gives the same batches (and losses on CPU).
Training batches are drawn on the device of the generator passed in (a CUDA
generator on a GPU): indices and fresh sequences are made where the data
lives, so a step copies nothing from the host and never waits for it.
"""

from __future__ import annotations

import math
import sysconfig
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

STDLIB_FILES = ("argparse.py", "ast.py", "calendar.py", "csv.py", "dataclasses.py", "difflib.py",
                "enum.py", "fractions.py", "functools.py", "heapq.py", "inspect.py", "random.py",
                "shutil.py", "statistics.py", "string.py", "subprocess.py", "tarfile.py",
                "textwrap.py", "typing.py")


class Task:
    """A dataset with train/validation splits: ``batch`` draws (x, y), ``loss`` scores."""

    model_fields: dict = {}
    dtype = None                # the model's dtype where it is not torch's default

    def __init__(self, device: torch.device):
        self.device = device

    def batch(self, split: str, batch_size: int, gen: torch.Generator):
        x, y = (self.x_train, self.y_train) if split == "train" else (self.x_val, self.y_val)
        i = torch.randint(len(x), (batch_size,), generator=gen, device=gen.device).to(self.device)
        return x[i], y[i]

    def sample(self, batch_size: int, gen: torch.Generator):
        """Training examples drawn at random, even where ``batch`` is the whole set."""
        return self.batch("train", batch_size, gen)

    def loss(self, out, y):
        return F.cross_entropy(out, y)


class TeacherTask(Task):
    """Labels are the argmax of a fixed random tanh network: learnable, never perfectly linear."""

    def __init__(self, device, seed: int, in_dim: int = 32, classes: int = 10,
                 n_train: int = 16384, n_val: int = 2048, train_examples: int | None = None):
        super().__init__(device)
        g = torch.Generator().manual_seed(seed)
        w1 = torch.randn(in_dim, 64, generator=g) / math.sqrt(in_dim)
        w2 = torch.randn(64, classes, generator=g) / math.sqrt(64)
        x = torch.randn(n_train + n_val, in_dim, generator=g)
        logits = torch.tanh(2 * x @ w1) @ w2
        centre = logits.mean(0)
        y = (logits - centre).argmax(1)         # centring balances the classes
        self.x_train, self.x_val = x[:n_train].to(device), x[n_train:].to(device)
        self.y_train, self.y_val = y[:n_train].to(device), y[n_train:].to(device)
        if train_examples is not None:          # the same validation set whatever the size
            extra = torch.randn(max(0, train_examples - n_train), in_dim, generator=g)
            x = torch.cat([x[:min(train_examples, n_train)], extra])
            y = (torch.tanh(2 * x @ w1) @ w2 - centre).argmax(1)
            self.x_train, self.y_train = x.to(device), y.to(device)
        self.model_fields = {"in_dim": in_dim, "classes": classes}


def draw_shapes(labels: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Images (N, 1, size, size) of the shape class in `labels` (0..9), random place and scale."""
    n = len(labels)
    s = size / 16
    r = (3 + 3 * torch.rand(n, generator=gen)) * s                     # half-size, 3..6 px at 16
    cx = r + torch.rand(n, generator=gen) * (size - 1 - 2 * r)
    cy = r + torch.rand(n, generator=gen) * (size - 1 - 2 * r)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32),
                            torch.arange(size, dtype=torch.float32), indexing="ij")
    dx = xx[None] - cx[:, None, None]                                  # (N, S, S)
    dy = yy[None] - cy[:, None, None]
    r3, t = r[:, None, None], 0.8 * s
    adx, ady, dist = dx.abs(), dy.abs(), (dx**2 + dy**2).sqrt()
    inside = (adx <= r3) & (ady <= r3)
    masks = torch.stack([
        inside,                                                         # 0 filled square
        inside & (torch.maximum(adx, ady) >= r3 - 1.2 * s),             # 1 hollow square
        dist <= r3,                                                     # 2 disk
        (dist - r3).abs() <= t,                                         # 3 ring
        (ady <= r3) & (adx <= (dy + r3) / 2),                           # 4 triangle
        ((adx <= t) & (ady <= r3)) | ((ady <= t) & (adx <= r3)),        # 5 plus
        inside & (((dx - dy).abs() <= t) | ((dx + dy).abs() <= t)),     # 6 cross (x)
        (ady <= 1.0 * s) & (adx <= r3),                                 # 7 horizontal bar
        (adx <= 1.0 * s) & (ady <= r3),                                 # 8 vertical bar
        adx + ady <= r3,                                                # 9 diamond
    ])                                                                  # (10, N, S, S)
    img = masks[labels, torch.arange(n)].float()
    img = img * (0.7 + 0.3 * torch.rand(n, 1, 1, generator=gen))
    img = img + 0.1 * torch.randn(n, size, size, generator=gen)
    return img[:, None]


class ShapesTask(Task):
    def __init__(self, device, seed: int, image_size: int = 16, n_train: int = 8192,
                 n_val: int = 1024, train_examples: int | None = None):
        super().__init__(device)
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(10, (n_train + n_val,), generator=g)
        x = draw_shapes(y, image_size, g)
        if train_examples is not None:          # the same validation set whatever the size
            y_more = torch.randint(10, (max(0, train_examples - n_train),), generator=g)
            keep = min(train_examples, n_train)
            x = torch.cat([x[:keep], draw_shapes(y_more, image_size, g), x[n_train:]])
            y = torch.cat([y[:keep], y_more, y[n_train:]])
            n_train = train_examples
        self.x_train, self.x_val = x[:n_train].to(device), x[n_train:].to(device)
        self.y_train, self.y_val = y[:n_train].to(device), y[n_train:].to(device)
        self.model_fields = {"image_size": image_size, "classes": 10}


def adding_problem(n: int, seq_len: int, gen: torch.Generator):
    """x (n, T, 2): values in [0, 1) and a marker on one step in each half; y (n, 1): their sum.

    Made on the generator's device."""
    dev = gen.device
    values = torch.rand(n, seq_len, generator=gen, device=dev)
    half = seq_len // 2
    first = torch.randint(half, (n,), generator=gen, device=dev)
    second = half + torch.randint(seq_len - half, (n,), generator=gen, device=dev)
    marker = torch.zeros(n, seq_len, device=dev)
    rows = torch.arange(n, device=dev)
    marker[rows, first] = 1.0
    marker[rows, second] = 1.0
    y = (values * marker).sum(1, keepdim=True)
    return torch.stack([values, marker], dim=2), y


class AddingTask(Task):
    """Fresh sequences every training batch (or a fixed set of `train_examples`, drawn once);
    a fixed validation set.

    The target is the sum of two U(0, 1) values: its variance is 2 * 1/12 = 1/6,
    the MSE of always predicting the mean 1.0. A model below that has learned.
    """

    baseline_mse = 1 / 6

    def __init__(self, device, seed: int, seq_len: int, n_val: int = 2048,
                 train_examples: int | None = None):
        super().__init__(device)
        self.seq_len = seq_len
        x, y = adding_problem(n_val, seq_len, torch.Generator().manual_seed(seed + 7919))
        self.x_val, self.y_val = x.to(device), y.to(device)
        self.finite = train_examples is not None
        if self.finite:
            x, y = adding_problem(train_examples, seq_len, torch.Generator().manual_seed(seed))
            self.x_train, self.y_train = x.to(device), y.to(device)
        self.model_fields = {"in_dim": 2, "out_dim": 1, "seq_len": seq_len}

    def batch(self, split, batch_size, gen):
        if split != "train" or self.finite:
            return super().batch(split, batch_size, gen)
        x, y = adding_problem(batch_size, self.seq_len, gen)
        return x.to(self.device), y.to(self.device)

    def loss(self, out, y):
        return F.mse_loss(out, y)


def stdlib_text(max_chars: int = 1_000_000) -> str:
    """Source of a fixed list of standard-library modules, as one string."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, total = [], 0
    for name in STDLIB_FILES:
        p = root / name
        if p.is_file() and total < max_chars:
            parts.append(p.read_text(encoding="utf-8", errors="replace"))
            total += len(parts[-1])
    text = "\n".join(parts)[:max_chars]
    if len(text) < 10_000:
        raise RuntimeError(f"found too little Python source under {root}; pass --text PATH")
    return text


class TextTask(Task):
    """Character-level LM: 90% of the text for training, the last 10% for validation."""

    def __init__(self, device, seq_len: int, path: str | None = None,
                 train_examples: int | None = None):
        super().__init__(device)
        text = Path(path).read_text(encoding="utf-8", errors="replace") if path else stdlib_text()
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        vocab, ids = np.unique(codes, return_inverse=True)
        self.vocab = "".join(chr(c) for c in vocab)
        tokens = torch.from_numpy(ids.astype(np.int64))
        n = int(0.9 * len(tokens))
        self.train_tokens, self.val_tokens = tokens[:n].to(device), tokens[n:].to(device)
        self.seq_len = seq_len
        if len(self.val_tokens) <= seq_len + 1:
            raise ValueError(f"the text is too short for --seq-len {seq_len}")
        if train_examples is not None:          # the first N windows: N + T + 1 characters
            windows = len(self.train_tokens) - seq_len - 1
            if train_examples > windows:
                raise ValueError(f"--train-examples {train_examples} is more than the "
                                 f"{windows:,} training windows the text holds")
            self.train_tokens = self.train_tokens[:train_examples + seq_len + 1]
        self.model_fields = {"vocab_size": len(vocab), "seq_len": seq_len}

    def batch(self, split, batch_size, gen):
        tokens = self.train_tokens if split == "train" else self.val_tokens
        start = torch.randint(len(tokens) - self.seq_len - 1, (batch_size, 1), generator=gen,
                              device=gen.device)
        idx = (start + torch.arange(self.seq_len + 1, device=gen.device)).to(self.device)  # (B, T+1)
        window = tokens[idx]
        return window[:, :-1], window[:, 1:]

    def loss(self, out, y):  # out (B, T, V), y (B, T)
        return F.cross_entropy(out.flatten(0, 1), y.flatten())


class LinearTask(Task):
    """f(w) = |Xw - y|^2 / 2N with H = X^T X / N = V diag(eigenvalues) V^T exactly.

    X = sqrt(N) U diag(sqrt(eigenvalues)) V^T, with U (N x D, orthonormal columns) and V
    (D x D, orthogonal) from QR of Gaussian matrices, so X^T X / N = V diag(eigenvalues) V^T
    to rounding. The eigenvalues run geometrically from 1/kappa to 1: L = 1, mu = 1/kappa.
    y = X w_true + noise * eps with |w_true| = 1; w* = H^-1 X^T y / N in closed form.
    float64 (float32 on MPS, which has no float64), so rates show over many decades.
    Training batches: the whole set when the batch is all of it (gradient descent), else
    examples drawn with replacement; validation is always the whole set, so the validation
    loss is f(w) itself.
    """

    def __init__(self, device, seed: int, dim: int, kappa: float, examples: int, noise: float):
        super().__init__(device)
        self.dtype = torch.float32 if device.type == "mps" else torch.float64
        dt = torch.float64
        g = torch.Generator().manual_seed(seed)
        self.eigenvalues = (kappa ** -torch.linspace(1, 0, dim, dtype=dt) if dim > 1
                            else torch.ones(1, dtype=dt))            # 1/kappa .. 1
        u, _ = torch.linalg.qr(torch.randn(examples, dim, generator=g, dtype=dt))
        v, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=dt))
        x = math.sqrt(examples) * (u * self.eigenvalues.sqrt()) @ v.T             # (N, D)
        w_true = torch.randn(dim, generator=g, dtype=dt)
        y = x @ (w_true / w_true.norm()) + noise * torch.randn(examples, generator=g, dtype=dt)
        self.v = v
        self.w_star = v @ ((v.T @ (x.T @ y) / examples) / self.eigenvalues)     # H^-1 X^T y / N
        self.x, self.y = x, y                                       # float64, on the CPU
        self.x_train = self.x_val = x.to(device, self.dtype)
        self.y_train = self.y_val = y[:, None].to(device, self.dtype)
        self.model_fields = {"dim": dim}

    def batch(self, split, batch_size, gen):
        if split == "val" or batch_size >= len(self.x_train):
            return self.x_train, self.y_train
        return super().batch(split, batch_size, gen)

    def sample(self, batch_size, gen):
        return super().batch("train", batch_size, gen)      # with replacement, any size

    def loss(self, out, y):  # |Xw - y|^2 / 2B: the Hessian of the whole set's loss is H
        return 0.5 * F.mse_loss(out, y)


def build_task(cfg, device: torch.device) -> Task:
    n = cfg.train_examples                              # None: the task's own training set
    if cfg.model in ("mlp", "rff"):                     # random features: the MLP's task
        return TeacherTask(device, cfg.seed, train_examples=n)
    if cfg.model == "cnn":
        return ShapesTask(device, cfg.seed, train_examples=n)
    if cfg.model == "rnn":
        return AddingTask(device, cfg.seed, cfg.seq_len, train_examples=n)
    if cfg.model == "linear":
        return LinearTask(device, cfg.seed, cfg.dim, cfg.kappa, cfg.examples, cfg.noise)
    return TextTask(device, cfg.seq_len, cfg.text, train_examples=n)
