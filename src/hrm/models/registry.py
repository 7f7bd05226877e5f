"""Model registry: `kind` in params.yaml -> config dataclass, constructor, parameter-count formula.

Every kind, image or puzzle, is built here from its config and a `Shape` (the few facts of the data
a model needs), so no model imports a data module and no verb builds a model its own way.
The formulas let `hrm describe` report exact trainable parameter counts without importing torch
(~3 s here); tests check that each formula equals the count of the model it builds.
Add a model kind by adding its config class, its module (with `build(cfg, shape)`), its formula and its
row in MODELS: the studies, the analyses, the ablation tables and the speed check read the row.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from hrm.core.errors import ConfigError
from hrm.core.fields import spec

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Shape:
    """What a model needs to know about its data: image (channels, height, width) or token sequences."""

    classes: int                                     # image classes, or the token vocabulary
    image_shape: tuple[int, int, int] | None = None  # image study
    seq_len: int = 0                                 # puzzle study: tokens per example
    puzzle_ids: int = 0                              # puzzle study: rows of the puzzle-embedding table


@dataclass(frozen=True)
class CNNConfig:
    """Small CNN baseline (REFERENCE I.4): [conv3x3 -> BN -> ReLU] x convs_per_stage, maxpool 2, per stage."""

    kind: Literal["cnn"] = spec("model family")
    widths: tuple[int, ...] = spec("output channels of each stage", ge=1)
    convs_per_stage: int = spec("conv-BN-ReLU units before each 2x2 max-pool", ge=1)
    bn_momentum: float = spec("BatchNorm running-stat momentum, PyTorch convention (Flax 0.9 = 0.1)", gt=0, le=1)
    bn_eps: float = spec("BatchNorm epsilon", gt=0)


def _cnn_params(cfg: CNNConfig, data: Shape) -> int:
    assert data.image_shape is not None
    total, c_in = 0, data.image_shape[0]
    for width in cfg.widths:
        for _ in range(cfg.convs_per_stage):
            total += c_in * width * 9 + 2 * width   # bias-free 3x3 conv + BN scale and shift
            c_in = width
    return total + c_in * data.classes              # bias-free linear head


Gradient = Literal["one-step", "last-cycle", "bptt"]
Halting = Literal["q-learning", "single-pass"]


@dataclass(frozen=True)
class BlockConfig:
    """The transformer block shared by every model of both studies (REFERENCE I.3, II.2)."""

    hidden: int = spec("D, model width", ge=2)
    heads: int = spec("attention heads (head dim = hidden / heads, even for RoPE)", ge=1)
    mlp_inner: int = spec("GLU inner width (image 4D; puzzle 1536 = 4D*2/3 rounded up to 256)", ge=1)
    mlp: Literal["geglu", "swiglu"] = spec("gated feed-forward: GEGLU (image) or SwiGLU (puzzle)")
    norm_gain: bool = spec("RMSNorm with a learned scale (image) or a pure function (puzzle)")
    norm_eps: float = spec("RMSNorm epsilon", gt=0)
    rope: Literal["interleaved", "half"] = spec("RoPE pairing: interleaved (Flax) or rotate-half (HRM)")
    rope_base: float = spec("RoPE base", gt=1)

    def __post_init__(self) -> None:
        if self.hidden % self.heads or (self.hidden // self.heads) % 2:
            raise ConfigError(f"heads: hidden ({self.hidden}) / heads ({self.heads}) must be a whole, even head "
                              "width (RoPE rotates pairs of channels)")


@dataclass(frozen=True)
class HRMCore(BlockConfig):
    """The two recurrent modules and their schedule; paper symbols in the docs."""

    low_layers: int = spec("blocks in f_L", ge=1)
    high_layers: int = spec("blocks in f_H", ge=1)
    high_cycles: int = spec("N, high-level cycles per segment", ge=1)
    low_steps: int = spec("T, low-level steps per high cycle", ge=1)
    gradient: Gradient = spec(
        "one-step: only the last f_L and f_H updates of a segment are differentiated (the paper); last-cycle: the "
        "whole last high cycle, T low steps and the high step (TRM's rule); bptt: all N*T steps (the memory "
        "ablation)", default="one-step", ablation=True)
    networks: Literal["separate", "shared"] = spec(
        "separate: f_L and f_H are two networks (the paper); shared: one network does both updates, TRM's "
        "choice (needs low_layers = high_layers)", default="separate", ablation=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.networks == "shared" and self.low_layers != self.high_layers:
            raise ConfigError(f"networks: 'shared' runs one network for both levels, so low_layers "
                              f"({self.low_layers}) must equal high_layers ({self.high_layers})")

    @property
    def layers(self) -> int:
        return self.low_layers + self.high_layers


@dataclass(frozen=True)
class ImageHRMConfig(HRMCore):
    """Image front end (REFERENCE I.3): 4x4 patches -> linear, CLS token, head on z_H's CLS."""

    kind: Literal["hrm-image"] = spec("model family")
    patch: int = spec("patch side in pixels (non-overlapping)", ge=1)
    train_segments: int = spec("deep-supervision segments per batch, one update after each", ge=1)
    eval_segments: int = spec("segments at evaluation, from the initial state", ge=1)
    # Ablations the image study proposes (REFERENCE I.7); the defaults are the paper's model.
    position: Literal["rope", "learned"] = spec(
        "rope: rotary positions in attention (the paper); learned: a trained position table added to the "
        "input tokens, no RoPE", default="rope", ablation=True)
    stem: Literal["patch", "conv"] = spec(
        "patch: one linear map per patch (the paper); conv: log2(patch) 3x3 stride-2 convolutions with ReLU, "
        "then a 1x1 to D (an early-convolution stem; patch must be a power of 2)", default="patch", ablation=True)
    deep_supervision: bool = spec(
        "true: a loss and an update after every training segment (the paper); false: the same segments, the "
        "earlier ones without gradient, one loss and one update after the last", default=True, ablation=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stem == "conv" and self.patch & (self.patch - 1):
            raise ConfigError(f"stem: 'conv' halves the image log2(patch) times, so patch must be a power of 2; "
                              f"got patch {self.patch}")

    def stem_channels(self) -> list[int]:
        """Output channels of the conv stem's stride-2 convolutions (D/2^k ... D/2), before the 1x1 to D."""
        k = self.patch.bit_length() - 1
        return [max(1, self.hidden >> (k - i)) for i in range(k)]


@dataclass(frozen=True)
class PuzzleHRMConfig(HRMCore):
    """Puzzle front end with ACT (REFERENCE II.2-II.3): tokens, puzzle-id prefix, Q head."""

    kind: Literal["hrm-puzzle"] = spec("model family")
    halt_max_steps: int = spec("M_max, segments at most (all of them at evaluation)", ge=1)
    halt_exploration: float = spec("probability of drawing a minimum of 2..M_max segments", ge=0, le=1)
    halting: Halting = spec(
        "q-learning: halt when q_halt > q_continue, the continue target from a second no-grad pass (the paper); "
        "single-pass: halt when q_halt > 0, no continue loss (TRM's rule)", default="q-learning", ablation=True)

    puzzle_prefix = 1             # positions the puzzle-id vector is given (TRM: 16); not a params key
    mixer = "attention"


@dataclass(frozen=True)
class PuzzleTransformerConfig(BlockConfig):
    """The direct-prediction baseline (REFERENCE II.1): one stack of `layers` blocks run once.

    Same front end and heads as the puzzle HRM; no recursion and one segment, so it has no
    cycle, step or halting keys (8 layers = the 27M HRM's 4 + 4 blocks, the same parameter count).
    """

    kind: Literal["transformer-puzzle"] = spec("model family")
    layers: int = spec("blocks in the one stack", ge=1)
    repeats: int = spec("the stack applied this many times with shared weights, the input injected each time: "
                        "1 = the plain transformer (the paper's baseline), more = a recurrent transformer of "
                        "effective depth layers * repeats (REFERENCE II.5)", ge=1, default=1, ablation=True)

    halt_max_steps = 1            # one forward pass: what the ACT code reads (not params keys)
    halt_exploration = 0.0
    halting = "q-learning"
    puzzle_prefix = 1
    mixer = "attention"
    recurrent = False             # a second segment recomputes the first: no inference-time scaling


@dataclass(frozen=True)
class TRMConfig(BlockConfig):
    """The Tiny Recursive Model (REFERENCE V.1): one network of `layers` blocks does every update.

    A segment runs T recursions of n latent updates z <- net(z + y + x) and one answer update
    y <- net(y + z); the first T-1 without gradient, the last with gradient through all n+1 calls.
    It is the HRM recurrence with N = T, T = n, one shared network and the last-cycle gradient, so
    the same `Reasoner` runs it; the properties below give it the HRM names it reads.
    """

    kind: Literal["trm-puzzle"] = spec("model family")
    layers: int = spec("blocks in the one network (the authors' L_layers)", ge=1)
    recursions: int = spec("T, recursions per supervision step (H_cycles)", ge=1)
    latent_steps: int = spec("n, latent updates per recursion (L_cycles)", ge=1)
    mixer: Literal["attention", "mlp"] = spec(
        "token mixing: self-attention (TRM-Att) or a SwiGLU across the token axis (TRM-MLP, mlp_t)")
    puzzle_prefix: int = spec("positions reserved for the puzzle-id vector; only the first is filled", ge=1)
    halt_max_steps: int = spec("N_sup, supervision steps at most (all of them at evaluation)", ge=1)
    halt_exploration: float = spec("probability of drawing a minimum of 2..N_sup steps", ge=0, le=1)
    gradient: Gradient = spec(
        "last-cycle: gradient through the last recursion's n+1 calls (TRM); one-step: only the last latent "
        "and answer updates (HRM's rule); bptt: all T(n+1) calls", default="last-cycle", ablation=True)
    networks: Literal["separate", "shared"] = spec(
        "shared: one network for z and y (TRM); separate: a second network of `layers` blocks for the answer "
        "update, as HRM's f_H", default="shared", ablation=True)
    halting: Halting = spec(
        "single-pass: halt when q_halt > 0, no continue loss (TRM); q-learning: HRM's q_halt > q_continue with "
        "the continue target from a second pass", default="single-pass", ablation=True)

    @property
    def low_layers(self) -> int:
        return self.layers

    @property
    def high_layers(self) -> int:
        return self.layers

    @property
    def high_cycles(self) -> int:
        return self.recursions

    @property
    def low_steps(self) -> int:
        return self.latent_steps


ModelConfig = CNNConfig | ImageHRMConfig | PuzzleHRMConfig | PuzzleTransformerConfig | TRMConfig
PuzzleModelConfig = PuzzleHRMConfig | PuzzleTransformerConfig | TRMConfig
Recurrent = HRMCore | TRMConfig          # what `hrm.models.hrm.Reasoner` runs


def glu_inner(width: int, expansion: float = 4.0) -> int:
    """The authors' SwiGLU width: round(expansion * width * 2/3) rounded up to a multiple of 256."""
    return -(-round(expansion * width * 2 / 3) // 256) * 256


def distinct_blocks(c: Recurrent) -> int:
    """Transformer blocks with their own weights: both levels' unless one network is shared."""
    return c.low_layers if c.networks == "shared" else c.low_layers + c.high_layers


def _block_params(c: BlockConfig, tokens: int = 0) -> int:
    """One block; a token-MLP block (TRM-MLP) mixes `tokens` positions with a SwiGLU instead of attention."""
    d, i = c.hidden, c.mlp_inner
    mixer = 3 * tokens * glu_inner(tokens) if getattr(c, "mixer", "attention") == "mlp" else 4 * d * d
    return mixer + 3 * d * i + (2 * d if c.norm_gain else 0)


def _image_hrm_params(c: ImageHRMConfig, data: Shape) -> int:
    assert data.image_shape is not None
    ch, h, w = data.image_shape
    if c.stem == "conv":
        widths = [ch, *c.stem_channels()]
        embed = sum(9 * a * b for a, b in zip(widths, widths[1:])) + widths[-1] * c.hidden
    else:
        embed = c.patch * c.patch * ch * c.hidden
    tokens = 1 + (h // c.patch) * (w // c.patch)
    position = tokens * c.hidden if c.position == "learned" else 0
    return embed + c.hidden + position + distinct_blocks(c) * _block_params(c) + c.hidden * data.classes


def effective_depth(c: ModelConfig) -> int:
    """Transformer blocks applied in one forward segment: what the depth-scaling analysis plots (II.5)."""
    if isinstance(c, PuzzleTransformerConfig):
        return c.layers * c.repeats
    if isinstance(c, HRMCore | TRMConfig):
        return c.high_cycles * (c.low_steps * c.low_layers + c.high_layers)
    raise ValueError(f"{c.kind} has no effective depth")


def _puzzle_params(c: PuzzleModelConfig, data: Shape) -> int:
    """Token embedding + blocks + LM head + Q head (with bias); the puzzle-id table is not counted."""
    blocks = c.layers if isinstance(c, PuzzleTransformerConfig) else distinct_blocks(c)
    return 2 * data.classes * c.hidden + blocks * _block_params(c, data.seq_len + c.puzzle_prefix) + 2 * c.hidden + 2


@dataclass(frozen=True)
class ModelEntry:
    """Everything the pipeline knows about a model kind, in one row: add a kind here (plus its params)."""

    config: type
    module: str                                      # imported lazily: it imports torch
    count: Callable[[Any, Shape], int]
    study: Literal["image", "puzzle"]                # which study's data, trainer and evaluation it runs under
    label: str                                       # its name in the ablation tables and figures
    two_states: bool                                 # z_H and z_L carried across segments: `hrm analyze` applies,
                                                     # and an image one trains segment by segment
    ema: bool                                        # its paper recipe averages the weights (TRM)
    tiny: dict[str, Any]                             # a tiny version (the speed options' check, `make gpu-check`)


_BLOCK = {"norm_eps": 1e-5, "rope_base": 10000, "hidden": 32, "heads": 2, "mlp_inner": 64}
_IMAGE = {"mlp": "geglu", "norm_gain": True, "rope": "interleaved"}
_PUZZLE = {"mlp": "swiglu", "norm_gain": False, "rope": "half"}
MODELS: dict[str, ModelEntry] = {
    "cnn": ModelEntry(CNNConfig, "hrm.models.cnn", _cnn_params, "image", "CNN", two_states=False, ema=False,
                      tiny={"widths": [8, 16], "convs_per_stage": 1, "bn_momentum": 0.1, "bn_eps": 1e-5}),
    "hrm-image": ModelEntry(ImageHRMConfig, "hrm.models.hrm", _image_hrm_params, "image", "HRM", two_states=True,
                            ema=False, tiny={
                                **_BLOCK, **_IMAGE, "low_layers": 1, "high_layers": 1, "high_cycles": 2,
                                "low_steps": 2, "patch": 7, "train_segments": 2, "eval_segments": 2}),
    "hrm-puzzle": ModelEntry(PuzzleHRMConfig, "hrm.models.hrm", _puzzle_params, "puzzle", "HRM", two_states=True,
                             ema=False, tiny={
                                 **_BLOCK, **_PUZZLE, "low_layers": 1, "high_layers": 1, "high_cycles": 2,
                                 "low_steps": 2, "halt_max_steps": 4, "halt_exploration": 0.1}),
    "transformer-puzzle": ModelEntry(PuzzleTransformerConfig, "hrm.models.hrm", _puzzle_params, "puzzle",
                                     "transformer", two_states=False, ema=False,
                                     tiny={**_BLOCK, **_PUZZLE, "layers": 2}),
    "trm-puzzle": ModelEntry(TRMConfig, "hrm.models.hrm", _puzzle_params, "puzzle", "TRM", two_states=True,
                             ema=True, tiny={
                                 **_BLOCK, **_PUZZLE, "layers": 2, "recursions": 2, "latent_steps": 2,
                                 "mixer": "attention", "puzzle_prefix": 4, "halt_max_steps": 4,
                                 "halt_exploration": 0.1}),
}


def build_model(cfg: ModelConfig, data: Shape) -> nn.Module:
    """Construct the model for `cfg` (weights drawn later by its `init_weights(generator)`)."""
    return importlib.import_module(MODELS[cfg.kind].module).build(cfg, data)


def count_params(cfg: ModelConfig, data: Shape) -> int:
    """Exact trainable parameter count, from the formula (no torch import)."""
    return MODELS[cfg.kind].count(cfg, data)
