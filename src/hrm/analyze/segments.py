"""`hrm analyze segments`: accuracy after each segment and when ACT would halt ("thinking fast and
slow", REFERENCE II.3 and II.5).

Every test example runs from the initial state for max(eval_halt_steps, M_max) segments (puzzles) or
2 * eval_segments (images), and after each segment m we score the answer (exact and token accuracy
for puzzles, per example, no voting; top-1 for images). For a puzzle HRM or TRM the halting step of an
example is the first segment where the Q head halts by the training rule (q_halt > q_continue, or
TRM's q_halt > 0), or M_max if none: its
distribution shows how much thinking each example takes, and the accuracy at that step is what
test-time halting would give. Images have no Q head: accuracy per segment only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from hrm.analyze.load import Subject, subject  # noqa: E402
from hrm.core import paths, provenance  # noqa: E402
from hrm.core.atomic import write_json  # noqa: E402
from hrm.core.losses import IGNORE_LABEL  # noqa: E402
from hrm.evaluate.figures import save  # noqa: E402
from hrm.models.act import wants_halt  # noqa: E402
from hrm.pipeline.config import Params  # noqa: E402

log = logging.getLogger("hrm")
BATCH = 256


@torch.no_grad()
def trace(s: Subject, segments: int, halt_max: int | None) -> dict[str, Any]:
    """Per segment: correct counts; per example: the halting step (puzzles with a Q head)."""
    n = s.test_size()
    exact, tokens_right, tokens_total = np.zeros(segments), np.zeros(segments), 0
    halting: list[np.ndarray] = []
    at_halt = 0
    for inputs, y in s.batches(n, BATCH):
        carry = s.initial_carry(inputs)
        halt_at = torch.full((len(y),), halt_max or 0, device=y.device)
        right_at_halt = torch.zeros(len(y), dtype=torch.bool, device=y.device)
        for m in range(segments):
            out = s.segment(carry, inputs)
            carry = out.carry
            pred = out.logits.argmax(-1)
            if s.sequences:
                valid = y != IGNORE_LABEL
                right = (pred == y) & valid
                ok = right.sum(-1) == valid.sum(-1)
                tokens_right[m] += int(right.sum())
                tokens_total += int(valid.sum()) if m == 0 else 0
            else:
                ok = pred == y
            exact[m] += int(ok.sum())
            if halt_max is not None and m < halt_max:   # rows still running that would halt here
                first = (halt_at == halt_max) & wants_halt(s.exp.model, out.q_halt, out.q_continue)
                halt_at = torch.where(first, torch.full_like(halt_at, m + 1), halt_at)
                right_at_halt = torch.where(halt_at == m + 1, ok, right_at_halt)
        if halt_max is not None:
            halting.append(halt_at.cpu().numpy())
            at_halt += int(right_at_halt.sum())
    result: dict[str, Any] = {"segments": list(range(1, segments + 1)), "accuracy": (exact / n).tolist()}
    if s.sequences:
        result["token_accuracy"] = (tokens_right / max(1, tokens_total)).tolist()
    if halt_max is not None:
        steps = np.concatenate(halting)
        rule = "q_halt > 0" if s.exp.model.halting == "single-pass" else "q_halt > q_continue"
        result["halting"] = {"rule": f"first segment with {rule} (the training rule), else M_max",
                             "histogram": np.bincount(steps, minlength=halt_max + 1)[1:].tolist(),
                             "mean_steps": float(steps.mean()), "accuracy_at_halt": at_halt / n}
    return result


def analyze(params: Params, name: str, seed: int) -> Path:
    s = subject(params, name, seed)
    c = s.exp.model
    if s.sequences:
        halt_max = c.halt_max_steps
        segments = max([*s.exp.recipe.eval_halt_steps, halt_max])
    else:
        halt_max, segments = None, 2 * c.eval_segments
    result = {"experiment": name, "seed": seed, "test_examples": s.test_size(),
              "trained_segments": halt_max or c.eval_segments,
              "metric": "exact accuracy per example, no voting" if s.sequences else "top-1 accuracy",
              **trace(s, segments, halt_max), "provenance": provenance.record(s.exp.params_hash())}
    g = s.exp.group
    draw(result, f"{name} seed {seed}", paths.analysis_figure(g, name, seed, "segments"))
    out = paths.analysis_file(g, name, seed, "segments")
    write_json(out, result)
    log.info("%s seed %d: accuracy by segment %s%s", name, seed, [round(a, 4) for a in result["accuracy"]],
             f"; halting histogram {result['halting']['histogram']}" if "halting" in result else "")
    return out


def draw(result: dict[str, Any], title: str, path: Path) -> None:
    halting = result.get("halting")
    fig, axes = plt.subplots(1, 2 if halting else 1, figsize=(10 if halting else 6, 3.6), squeeze=False)
    ax = axes[0][0]
    ax.plot(result["segments"], [100 * a for a in result["accuracy"]], marker="o", label=result["metric"])
    if "token_accuracy" in result:
        ax.plot(result["segments"], [100 * a for a in result["token_accuracy"]], marker=".", ls=":",
                label="token accuracy")
    ax.axvline(result["trained_segments"], color="grey", ls="--", lw=1, label="trained segments")
    ax.set(xlabel="segments run", ylabel="test accuracy (%)", title="accuracy after each segment")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if halting:
        ax = axes[0][1]
        hist = halting["histogram"]
        ax.bar(range(1, len(hist) + 1), hist)
        ax.set(xlabel=f"halting step ({halting['rule']})", ylabel="test examples",
               title=f"halting: mean {halting['mean_steps']:.2f} segments, accuracy there "
                     f"{100 * halting['accuracy_at_halt']:.1f}%")
        ax.set_xticks(range(1, len(hist) + 1))
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title)
    save(fig, path)
