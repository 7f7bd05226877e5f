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
class ModelEntry:
    config: type
    module: str                                      # imported lazily: it imports torch
    count: Callable[[Any, Dataset], int]


MODELS: dict[str, ModelEntry] = {
    "cnn": ModelEntry(CNNConfig, "hrm.models.cnn", _cnn_params),
}
MODEL_CONFIGS = {kind: entry.config for kind, entry in MODELS.items()}


def build_model(cfg: Any, data: Dataset) -> nn.Module:
    """Construct the model for `cfg` (weights drawn later by its `init_weights(generator)`)."""
    return importlib.import_module(MODELS[cfg.kind].module).build(cfg, data)


def count_params(cfg: Any, data: Dataset) -> int:
    """Exact trainable parameter count, from the formula (no torch import)."""
    return MODELS[cfg.kind].count(cfg, data)
