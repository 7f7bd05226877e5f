"""ARC evaluation by voting (REFERENCE II.4): the one implementation, used by `hrm evaluate` and the tests.

Each augmented version's prediction is cropped from its square canvas (30x30 in the paper), mapped back to the original
task (inverse dihedral transform, then inverse colour map), and counted. Answers are ranked by
(votes, mean sigmoid(q_halt)); pass@K counts a task solved when every one of its test inputs has
its true answer among the top K (HRM), or credits each test input on its own (TRM's partial
credit). Votes come from one checkpoint only: they never accumulate across checkpoints.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from hrm.data.puzzles.arc import COLOR_OFFSET, COLORS, invert_answer

COLOR_MAX = COLOR_OFFSET + COLORS - 1      # token of colour 9

PASS_AT = (1, 2, 10, 100, 1000)
HEADLINE_K = 2                     # the paper's ARC number is pass@2


def crop(tokens: np.ndarray) -> np.ndarray:
    """The authors' crop of a square token canvas (REFERENCE II.4, their arc_eval.ipynb), as colours.

    Row r (1-based) may be as wide as its leading run of colour tokens, and never wider than the rows
    above it; of these top-left rectangles the largest area wins, the first (shortest) on ties. A
    malformed prediction is so cut to the largest rectangle whose rows narrow downward; a canvas whose
    first token is not a colour crops to nothing.
    """
    colour = (tokens >= COLOR_OFFSET) & (tokens <= COLOR_MAX)
    # Each row's leading run of colours: up to its first other token, or the whole row.
    leading = np.where(colour.all(axis=1), tokens.shape[1], np.argmin(colour, axis=1))
    widths = np.minimum.accumulate(leading)
    areas = np.arange(1, len(widths) + 1) * widths
    best = int(np.argmax(areas))                          # the first maximum: ties keep the shorter
    h, w = (best + 1, int(widths[best])) if areas[best] > 0 else (0, 0)
    return tokens[:h, :w].astype(np.int64) - COLOR_OFFSET


class Votes:
    """Per (task, test input): distinct original-space answers with vote count and summed confidence."""

    def __init__(self) -> None:
        self.tally: dict[tuple[int, int], dict[bytes, list]] = defaultdict(dict)

    def add(self, task: int, test_index: int, tokens: np.ndarray, trans: int, colors: np.ndarray,
            confidence: float) -> None:
        """One version's prediction: `tokens` (side*side,) or (side, side), under dihedral `trans`, colours `colors`."""
        tokens = np.asarray(tokens)
        side = round(tokens.size ** 0.5)
        grid = invert_answer(crop(tokens.reshape(side, side)).astype(np.uint8), trans, colors)
        # As the authors key an answer: its bytes and its shape (an empty crop is one answer of its own).
        key = bytes(grid.shape) + grid.tobytes()
        entry = self.tally[(task, test_index)].setdefault(key, [0, 0.0, grid])
        entry[0] += 1
        entry[1] += confidence

    def ranked(self, task: int, test_index: int) -> list[np.ndarray]:
        """Distinct answers, most votes first; ties broken by the higher mean confidence."""
        answers = self.tally.get((task, test_index), {}).values()
        return [a[2] for a in sorted(answers, key=lambda a: (a[0], a[1] / a[0]), reverse=True)]


def arc_scores(votes: Votes, answers: list[list[np.ndarray]]) -> dict[str, float]:
    """pass@K all-or-nothing per task (HRM) and with partial credit per test input (TRM), K in PASS_AT."""
    out: dict[str, float] = {}
    for k in PASS_AT:
        strict, partial = [], []
        for task, truths in enumerate(answers):
            hits = [any(p.shape == t.shape and np.array_equal(p, t) for p in votes.ranked(task, i)[:k])
                    for i, t in enumerate(truths)]
            strict.append(all(hits))
            partial.append(sum(hits) / len(hits))
        out[f"pass@{k}"] = float(np.mean(strict))
        out[f"partial_pass@{k}"] = float(np.mean(partial))
    return out


def submission(votes: Votes, names: list[str], answers: list[list[np.ndarray]]) -> dict[str, list[dict]]:
    """Kaggle's format: per task, per test input, two attempts (the top two voted answers)."""
    out = {}
    for task, name in enumerate(names):
        entries = []
        for i in range(len(answers[task])):
            top = [a.tolist() for a in votes.ranked(task, i)[:2]] or [[[0]]]
            top += top[:1] * (2 - len(top))
            entries.append({"attempt_1": top[0], "attempt_2": top[1]})
        out[name] = entries
    return out
