"""What can be trained: model configs, optimizers, schedules, norms. No torch here.

The UI process reads these tables to offer choices and validate input, so this
module must stay importable without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NORMS = ("none", "batch", "layer", "rms", "group")
ON_DIVERGE = ("stop", "pause", "skip")     # what a non-finite loss does to the run
# How data-parallel ranks combine gradients: DDP's ring all-reduce, a synchronous
# parameter server (gather to rank 0, average, scatter back), DDP's compression hooks.
SYNCS = ("allreduce", "ps", "bf16", "powersgd")
# how the ranks split the work: ddp replicates everything; zero1 shards the optimizer state;
# fsdp shards parameters, gradients and optimizer state (ZeRO-3); tp splits layers (Megatron);
# pp splits the blocks into stages (a pipeline of microbatches)
PARALLEL = ("ddp", "zero1", "fsdp", "tp", "pp")
PIPELINE_SCHEDULES = ("gpipe", "1f1b")
MICROBATCHES = 4            # --microbatches under pp by default
SPLIT_MODEL = ("tp", "pp")              # modes in which no rank runs the whole model
SPLITS = {"zero1": "shards the optimizer state", "fsdp": "shards the parameters, gradients "
          "and optimizer state", "tp": "splits the layers' weights", "pp": "splits the blocks "
          "into stages"}        # what each mode splits (why a live switch is refused)
TENSOR_PARALLEL = ("transformer", "mlp")    # families tp knows how to split
PIPELINE = ("transformer", "mlp")           # families pp cuts into stages of blocks
# optimizers ZeRO cannot shard, and why
UNSHARDABLE = {"muon": "it is two optimizers in one (Muon and AdamW)",
               "svrg": "its snapshot gradient is per rank",
               "adamw-sf": "its train/eval switch of the weights is not sharded"}
# Math modes: auto is bf16 on a GPU that has it, fp32 elsewhere; tf32 is fp32 storage with
# TF32 tensor-core matmuls; bf16 is autocast; fp16 is autocast with a gradient scaler.
PRECISIONS = ("auto", "fp32", "tf32", "bf16", "fp16")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune",
                 "max-autotune-no-cudagraphs")      # torch.compile's modes


@dataclass(frozen=True)
class MLPConfig:
    in_dim: int = 32            # input features of the teacher task
    classes: int = 10           # output classes
    layers: int = 3             # hidden Linear -> norm -> activation blocks
    width: int = 128            # hidden width
    activation: str = "relu"    # relu | gelu | tanh | sigmoid
    norm: str = "none"          # none | batch | layer | rms
    dropout: float = 0.0        # nn.Dropout after each block's activation


@dataclass(frozen=True)
class RFFConfig:
    in_dim: int = 32            # input features of the teacher task (the MLP's task)
    classes: int = 10           # output classes
    width: int = 512            # random features D; only the D x classes readout is trained
    sigma: float = 8.0          # kernel bandwidth, W ~ N(0, 1/sigma^2): the median distance
                                # between two inputs, sqrt(2 in_dim) (the median heuristic)
    norm: str = "none"          # a fixed feature map has no normalization slot


@dataclass(frozen=True)
class CNNConfig:
    image_size: int = 16        # square single-channel images
    classes: int = 10           # shape classes
    layers: int = 3             # conv blocks
    width: int = 32             # channels of every conv block
    residual: bool = False      # add the block's input to its output
    norm: str = "batch"         # none | batch | layer | rms | group
    dropout: float = 0.0        # nn.Dropout after each block's activation


@dataclass(frozen=True)
class RNNConfig:
    in_dim: int = 2             # adding problem: (value, marker) per step
    out_dim: int = 1            # one regression target
    cell: str = "gru"           # rnn (tanh) | gru | lstm
    layers: int = 1             # stacked recurrent layers
    width: int = 64             # hidden size
    seq_len: int = 20           # adding-problem length; longer is harder
    norm: str = "none"          # none | layer | rms, on each step's gate pre-activations


@dataclass(frozen=True)
class TransformerConfig:
    vocab_size: int = 128       # set from the text at build time
    layers: int = 2             # decoder blocks
    width: int = 64             # d_model
    heads: int = 4              # attention heads; must divide width
    seq_len: int = 64           # context length in characters
    norm: str = "layer"         # none | layer | rms, pre-norm as in GPT-2
    dropout: float = 0.0        # on the embeddings and each residual branch (nanoGPT's resid_dropout)


@dataclass(frozen=True)
class LinearConfig:
    dim: int = 32               # weights w in R^dim: least squares, f(w) = |Xw - y|^2 / 2N
    kappa: float = 100.0        # condition number L/mu; H = X^T X / N has eigenvalues 1/kappa..1
    examples: int = 1024        # rows of X; the default batch is all of them (gradient descent)
    noise: float = 0.1          # std of the label noise: y = X w_true + noise * eps
    norm: str = "none"          # least squares has no normalization slot


MODEL_CONFIGS = {
    "mlp": MLPConfig,
    "rff": RFFConfig,
    "cnn": CNNConfig,
    "rnn": RNNConfig,
    "transformer": TransformerConfig,
    "linear": LinearConfig,
}

# Which run-config size fields each model reads (a flag for another model is refused).
MODEL_FIELDS = {
    "mlp": ("layers", "width", "activation"),
    "rff": ("width", "sigma"),
    "cnn": ("layers", "width", "residual"),
    "rnn": ("layers", "width", "seq_len", "cell"),
    "transformer": ("layers", "width", "heads", "seq_len", "text"),
    "linear": ("dim", "kappa", "examples", "noise"),
}

# --dropout: the families with nn.Dropout in their blocks; why the others have none
DROPOUT_REFUSED = {
    "rnn": "dropout across time steps needs one mask per sequence (variational dropout); the "
           "RNN has none",
    "rff": "only the readout of fixed random features is trained: nothing to co-adapt",
    "linear": "least squares has no hidden units to drop",
}
# --train-examples: every family draws its training batches from a set it can shrink, except
# least squares, whose set is --examples rows
TRAIN_EXAMPLES_REFUSED = {"linear": "its training set is its --examples rows of X"}

CHOICES = {
    "activation": ("relu", "gelu", "tanh", "sigmoid"),
    "cell": ("rnn", "gru", "lstm"),
}

DEFAULT_BATCH_SIZE = {"mlp": 128, "rff": 128, "cnn": 64, "rnn": 64, "transformer": 32, "linear": None}
# (linear: None is every example, full-batch gradient descent)

# Norms a model refuses, with the reason shown to the user.
REFUSED_NORMS = {
    "mlp": {"group": "group norm needs channels; the MLP takes none, batch, layer or rms"},
    "rnn": {
        "batch": "batch norm in a recurrent net needs statistics per time step; use layer or rms",
        "group": "group norm needs channels; the RNN takes none, layer or rms",
    },
    "transformer": {
        "batch": "batch norm in a causal language model leaks future tokens through the "
        "batch statistics; use layer or rms",
        "group": "group norm needs channels; the transformer takes none, layer or rms",
    },
    "cnn": {},
    "rff": {n: "random features are a fixed map cos(Wx + b): nothing to normalize"
            for n in NORMS if n != "none"},
    "linear": {n: "the linear model is least squares, with no normalization slot"
               for n in NORMS if n != "none"},
}


def norm_refusal(model: str, norm: str) -> str | None:
    """Why `model` refuses `norm`, or None when the pair makes sense."""
    if norm not in NORMS:
        return f"unknown normalization {norm!r}; allowed: {', '.join(NORMS)}"
    return REFUSED_NORMS[model].get(norm)


def allowed_norms(model: str) -> tuple[str, ...]:
    return tuple(n for n in NORMS if norm_refusal(model, n) is None)


@dataclass(frozen=True)
class OptimizerSpec:
    lr: float                                   # default learning rate
    hparams: tuple[str, ...] = ()               # run-config fields it reads
    weight_decay: float = 0.0                   # default weight decay
    carries: tuple[str, ...] = ()               # state keys that keep their meaning
    family: str = ""                            # switches within a family carry `carries`
    defaults: dict = field(default_factory=dict)


OPTIMIZERS = {
    "sgd": OptimizerSpec(lr=0.1),
    "momentum": OptimizerSpec(lr=0.05, hparams=("momentum",), carries=("momentum_buffer",),
                              family="heavy-ball", defaults={"momentum": 0.9}),
    "nesterov": OptimizerSpec(lr=0.05, hparams=("momentum",), carries=("momentum_buffer",),
                              family="heavy-ball", defaults={"momentum": 0.9}),
    "adagrad": OptimizerSpec(lr=0.05),
    "rmsprop": OptimizerSpec(lr=1e-3, hparams=("momentum", "beta2"), defaults={"momentum": 0.0,
                                                                                "beta2": 0.99}),
    "adam": OptimizerSpec(lr=3e-3, hparams=("beta1", "beta2"), carries=("step", "exp_avg", "exp_avg_sq"),
                          family="adam", defaults={"beta1": 0.9, "beta2": 0.999}),
    "adamw": OptimizerSpec(lr=3e-3, hparams=("beta1", "beta2"), weight_decay=0.01,
                           carries=("step", "exp_avg", "exp_avg_sq"), family="adam",
                           defaults={"beta1": 0.9, "beta2": 0.999}),
    "nadam": OptimizerSpec(lr=3e-3, hparams=("beta1", "beta2"), carries=("step", "exp_avg", "exp_avg_sq"),
                           family="adam", defaults={"beta1": 0.9, "beta2": 0.999}),
    "radam": OptimizerSpec(lr=3e-3, hparams=("beta1", "beta2"), carries=("step", "exp_avg", "exp_avg_sq"),
                           family="adam", defaults={"beta1": 0.9, "beta2": 0.999}),
    "adamax": OptimizerSpec(lr=3e-3, hparams=("beta1", "beta2"), defaults={"beta1": 0.9, "beta2": 0.999}),
    "adafactor": OptimizerSpec(lr=1e-2),
    # Muon orthogonalises the update of 2-D hidden weights; embeddings, the head and
    # every non-2-D tensor go to AdamW at the same lr (Moonshot's RMS matching).
    "muon": OptimizerSpec(lr=3e-3, hparams=("momentum",), weight_decay=0.01,
                          defaults={"momentum": 0.95}),
    # SGD on a variance-reduced gradient (trainer/optim/svrg.py); a snapshot every svrg_every steps
    "svrg": OptimizerSpec(lr=0.05, hparams=("svrg_every",), defaults={"svrg_every": 100}),
    # Schedule-free AdamW (Defazio et al. 2024, the schedulefree package): trains at y, an
    # interpolation of its SGD-like sequence z and their running average x; evaluates at x
    "adamw-sf": OptimizerSpec(lr=2.5e-3, hparams=("beta1", "beta2"), weight_decay=0.01,
                              defaults={"beta1": 0.9, "beta2": 0.999}),
}
SCHEDULE_FREE = ("adamw-sf",)
# weight decay applied to the weights themselves (w -= lr wd w); the others add wd w to the
# gradient, an L2 penalty that Adam's preconditioner then rescales (Loshchilov & Hutter)
DECOUPLED_DECAY = ("adamw", "muon", "adamw-sf", "adafactor")   # optimizers with a train/eval switch of the weights

SCHEDULES = ("constant", "warmup-cosine", "step", "inverse-time")
