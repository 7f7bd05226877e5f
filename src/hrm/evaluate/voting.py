"""ARC evaluation by voting (REFERENCE II.4): the one implementation, used by `hrm evaluate` and the tests.

Each augmented version's prediction is cropped from its square canvas (30x30 in the paper), mapped back to the original
task (inverse dihedral transform, then inverse colour map), and counted. Answers are ranked by
(votes, mean sigmoid(q_halt)); pass@K counts a task solved when every one of its test inputs has
its true answer among the top K (HRM), or credits each test input on its own (TRM's partial
credit). Votes come from one checkpoint (`hrm evaluate`'s model) unless a recipe asks for TRM's
pooled voting (`pooled_voting: true`): then the training keeps one table for every evaluation it
makes and saves it (`Votes.arrays`) with its checkpoints and model.pt.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from hrm.data.puzzles import stream
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

    def merge(self, other: Votes) -> None:
        """Add `other`'s votes (TRM's pooling across evaluations)."""
        for where, answers in other.tally.items():
            mine = self.tally[where]
            for key, (count, confidence, grid) in answers.items():
                entry = mine.setdefault(key, [0, 0.0, grid])
                entry[0] += count
                entry[1] += confidence

    def arrays(self) -> dict[str, np.ndarray]:
        """The table as plain arrays (a checkpoint holds tensors only): one row per distinct answer."""
        rows = [(t, i, n, c, g) for (t, i), answers in self.tally.items() for n, c, g in answers.values()]
        side = max((max(g.shape) for *_, g in rows), default=0)
        grids = np.zeros((len(rows), side, side), np.uint8)
        for r, (*_, g) in enumerate(rows):
            grids[r, :g.shape[0], :g.shape[1]] = g
        return {"where": np.array([(t, i) for t, i, *_ in rows], np.int64).reshape(-1, 2),
                "count": np.array([n for _, _, n, _, _ in rows], np.int64),
                "confidence": np.array([c for *_, c, _ in rows], np.float64),
                "shape": np.array([g.shape for *_, g in rows], np.int64).reshape(-1, 2), "grids": grids}

    @classmethod
    def from_arrays(cls, a: dict[str, Any]) -> Votes:
        votes = cls()
        for (t, i), n, c, (h, w), g in zip(np.asarray(a["where"]), np.asarray(a["count"]),
                                           np.asarray(a["confidence"]), np.asarray(a["shape"]), np.asarray(a["grids"])):
            grid = np.ascontiguousarray(g[:h, :w])
            votes.tally[(int(t), int(i))][bytes(grid.shape) + grid.tobytes()] = [int(n), float(c), grid]
        return votes

    def ranked(self, task: int, test_index: int) -> list[np.ndarray]:
        """Distinct answers, most votes first; ties broken by the higher mean confidence."""
        answers = self.tally.get((task, test_index), {}).values()
        return [a[2] for a in sorted(answers, key=lambda a: (a[0], a[1] / a[0]), reverse=True)]


def arc_votes(data: stream.PuzzleData, segments: list[int]) -> tuple[dict[int, Votes], dict[int, Votes], Any]:
    """Per segment count: the votes of every version, the one view of the unaugmented task alone
    (what the model answers without voting), and the `each` callback of `score_puzzles` that fills both."""
    assert data.augmentations is not None
    votes, single = {m: Votes() for m in segments}, {m: Votes() for m in segments}
    task_of, test_index, ids = stream.example_tasks(data)
    identity = np.arange(len(data.augmentations[0]) - 1)

    def each(m: int, idx: np.ndarray, pred: Any, conf: Any) -> None:
        pred_np, conf_np = pred.cpu().numpy().astype(np.uint8), conf.cpu().numpy()
        for j, e in enumerate(idx):
            aug = data.augmentations[ids[e]]
            vote = (int(task_of[e]), int(test_index[e]), pred_np[j], int(aug[0]), aug[1:], float(conf_np[j]))
            votes[m].add(*vote)
            if aug[0] == 0 and np.array_equal(aug[1:], identity):
                single[m].add(*vote)

    return votes, single, each


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
