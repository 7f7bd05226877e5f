"""`hrm analyze KIND EXPERIMENT --seed S`: the papers' analyses of a trained run (REFERENCE II.5).

Each kind is a module offering `analyze(params, name, seed) -> Path` (its JSON); which kinds an
experiment gets is the experiment's `analyses` key in params.yaml, and the stage table makes one
stage per (kind, run) whose code dependencies are that kind's module alone. No torch here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

# kind -> (module, what it measures); the model kinds each applies to: hrm.config.ANALYSIS_MODELS
KINDS: dict[str, tuple[str, str]] = {
    "pr": ("hrm.analyze.pr", "participation ratio of z_H and z_L, trained and untrained (HRM paper, II.5)"),
    "segments": ("hrm.analyze.segments", "accuracy after each segment and the halting-step distribution (ACT)"),
}


def run(kind: str) -> Callable[..., Any]:
    """The kind's `analyze(params, name, seed) -> Path` (imports torch only now)."""
    return importlib.import_module(module(kind)).analyze


def module(kind: str) -> str:
    return KINDS[kind][0]

