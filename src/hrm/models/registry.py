"""Model registry: `kind` in params.yaml -> config dataclass, constructor, parameter-count formula.

The formulas let `hrm describe` report exact trainable parameter counts without importing torch
(~3 s here); tests check that each formula equals the count of the model it builds.
Add a model by adding its config class, its module (with `build(cfg, dataset)`) and its formula.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from hrm.config import spec
from hrm.data.sources import Dataset

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class CNNConfig:
    """Small CNN baseline (REFERENCE I.4): [conv3x3 -> BN -> ReLU] x convs_per_stage, maxpool 2, per stage."""

    kind: Literal["cnn"] = spec("model family")
    widths: tuple[int, ...] = spec("output channels of each stage", ge=1)
    convs_per_stage: int = spec("conv-BN-ReLU units before each 2x2 max-pool", ge=1)
    bn_momentum: float = spec("BatchNorm running-stat momentum, PyTorch convention (Flax 0.9 = 0.1)", gt=0, le=1)
    bn_eps: float = spec("BatchNorm epsilon", gt=0)


def _cnn_params(cfg: CNNConfig, data: Dataset) -> int:
    total, c_in = 0, data.image_shape[0]
    for width in cfg.widths:
        for _ in range(cfg.convs_per_stage):
            total += c_in * width * 9 + 2 * width   # bias-free 3x3 conv + BN scale and shift
            c_in = width
    return total + c_in * data.classes              # bias-free linear head


@dataclass(frozen=True)
class HRMCore:
    """Fields shared by both HRM studies (REFERENCE I.3, II.2); paper symbols in the docs."""

    hidden: int = spec("D, model width", ge=2)
    heads: int = spec("attention heads (head dim = hidden / heads, even for RoPE)", ge=1)
    mlp_inner: int = spec("GLU inner width (image 4D; puzzle 1536 = 4D*2/3 rounded up to 256)", ge=1)
    mlp: Literal["geglu", "swiglu"] = spec("gated feed-forward: GEGLU (image) or SwiGLU (puzzle)")
    norm_gain: bool = spec("RMSNorm with a learned scale (image) or a pure function (puzzle)")
    norm_eps: float = spec("RMSNorm epsilon", gt=0)
    rope: Literal["interleaved", "half"] = spec("RoPE pairing: interleaved (Flax) or rotate-half (HRM)")
    rope_base: float = spec("RoPE base", gt=1)
    low_layers: int = spec("blocks in f_L", ge=1)
    high_layers: int = spec("blocks in f_H", ge=1)
    high_cycles: int = spec("N, high-level cycles per segment", ge=1)
    low_steps: int = spec("T, low-level steps per high cycle", ge=1)


@dataclass(frozen=True)
class ImageHRMConfig(HRMCore):
    """Image front end (REFERENCE I.3): 4x4 patches -> linear, CLS token, head on z_H's CLS."""

    kind: Literal["hrm-image"] = spec("model family")
    patch: int = spec("patch side in pixels (non-overlapping)", ge=1)
    train_segments: int = spec("deep-supervision segments per batch, one update after each", ge=1)
    eval_segments: int = spec("segments at evaluation, from the initial state", ge=1)


@dataclass(frozen=True)
class PuzzleHRMConfig(HRMCore):
    """Puzzle front end with ACT (REFERENCE II.2-II.3): tokens, puzzle-id prefix, Q head."""

    kind: Literal["hrm-puzzle"] = spec("model family")
    halt_max_steps: int = spec("M_max, segments at most (all of them at evaluation)", ge=1)
    halt_exploration: float = spec("probability of drawing a minimum of 2..M_max segments", ge=0, le=1)


@dataclass(frozen=True)
class PuzzleTransformerConfig(HRMCore):
    """The direct-prediction baseline (REFERENCE II.1): the same blocks run once, no recursion.

    It keeps HRMCore's fields so that one params entry differs from the HRM's only in `kind`;
    low_layers + high_layers blocks run in one stack (8 for the 27M preset, the same parameter
    count), high_cycles and low_steps are ignored, and ACT is fixed to one segment.
    """

    kind: Literal["transformer-puzzle"] = spec("model family")
    halt_max_steps: int = spec("must be 1: one forward pass", ge=1, le=1)
    halt_exploration: float = spec("must be 0", ge=0, le=0)


def _block_params(c: HRMCore) -> int:
    d, i = c.hidden, c.mlp_inner
    return 3 * d * d + d * d + 2 * d * i + i * d + (2 * d if c.norm_gain else 0)


def _image_hrm_params(c: ImageHRMConfig, data: Dataset) -> int:
    ch = data.image_shape[0]
    patch_in = c.patch * c.patch * ch
    return patch_in * c.hidden + c.hidden + (c.low_layers + c.high_layers) * _block_params(c) + c.hidden * data.classes


def puzzle_hrm_params(c: PuzzleHRMConfig | PuzzleTransformerConfig, vocab: int) -> int:
    """Token embedding + blocks + LM head + Q head (with bias); the puzzle-id table is not counted."""
    return 2 * vocab * c.hidden + (c.low_layers + c.high_layers) * _block_params(c) + 2 * c.hidden + 2


@dataclass(frozen=True)
class ModelEntry:
    config: type
    module: str                                      # imported lazily: it imports torch
    count: Callable[[Any, Dataset], int]


MODELS: dict[str, ModelEntry] = {
    "cnn": ModelEntry(CNNConfig, "hrm.models.cnn", _cnn_params),
    "hrm-image": ModelEntry(ImageHRMConfig, "hrm.models.hrm", _image_hrm_params),
    "hrm-puzzle": ModelEntry(PuzzleHRMConfig, "hrm.models.hrm",
                             lambda c, data: puzzle_hrm_params(c, data.classes)),
    "transformer-puzzle": ModelEntry(PuzzleTransformerConfig, "hrm.models.hrm",
                                     lambda c, data: puzzle_hrm_params(c, data.classes)),
}
MODEL_CONFIGS = {kind: entry.config for kind, entry in MODELS.items()}


def build_model(cfg: Any, data: Dataset) -> nn.Module:
    """Construct the model for `cfg` (weights drawn later by its `init_weights(generator)`)."""
    return importlib.import_module(MODELS[cfg.kind].module).build(cfg, data)


def count_params(cfg: Any, data: Dataset) -> int:
    """Exact trainable parameter count, from the formula (no torch import)."""
    return MODELS[cfg.kind].count(cfg, data)
