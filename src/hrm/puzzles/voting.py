"""ARC evaluation with voting (REFERENCE II.4): crop, invert augmentations, vote, score pass@K.

Predictions of one checkpoint only: votes never accumulate across checkpoints.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from hrm.puzzles import dihedral

PAD, EOS, COLOR_OFFSET = 0, 1, 2      # tokens: pad 0, EOS 1, colour c -> c + 2


def crop(tokens: np.ndarray) -> np.ndarray:
    """The top-left grid of a 30x30 token canvas, up to the first PAD/EOS in row 0 and column 0."""
    stop_col = np.flatnonzero(tokens[0] < COLOR_OFFSET)
    stop_row = np.flatnonzero(tokens[:, 0] < COLOR_OFFSET)
    w = int(stop_col[0]) if len(stop_col) else tokens.shape[1]
    h = int(stop_row[0]) if len(stop_row) else tokens.shape[0]
    grid = tokens[:h, :w]
    if (grid < COLOR_OFFSET).any():                  # a hole inside: cut at the first bad row
        bad_rows = np.flatnonzero((grid < COLOR_OFFSET).any(axis=1))
        grid = grid[: bad_rows[0]]
    return grid.astype(np.int64) - COLOR_OFFSET


@dataclass(frozen=True)
class Prediction:
    task: str
    test_index: int                    # which test input of the task
    tokens: np.ndarray                 # (30, 30) argmax tokens of one augmented version
    dihedral: int                      # the version's transform
    colors: np.ndarray                 # (10,) colour permutation applied (0 fixed)
    confidence: float                  # sigmoid(q_halt)


def original_answer(p: Prediction) -> tuple[tuple[int, ...], ...]:
    """Undo the dihedral transform, then the colour permutation."""
    grid = dihedral.inverse(crop(p.tokens), p.dihedral)
    return tuple(map(tuple, np.argsort(p.colors)[grid].tolist()))


def vote(predictions: Iterable[Prediction]) -> dict[tuple[str, int], list[tuple[tuple, int, float]]]:
    """Per (task, test input): distinct answers ranked by (votes, mean confidence), descending."""
    tally: dict[tuple[str, int], dict[tuple, list[float]]] = defaultdict(lambda: defaultdict(list))
    for p in predictions:
        tally[(p.task, p.test_index)][original_answer(p)].append(p.confidence)
    return {key: sorted(((a, len(c), float(np.mean(c))) for a, c in answers.items()),
                        key=lambda x: (x[1], x[2]), reverse=True)
            for key, answers in tally.items()}


def pass_at_k(ranked: dict[tuple[str, int], list[tuple[tuple, int, float]]],
              truth: dict[tuple[str, int], tuple], k: int) -> tuple[float, float]:
    """(HRM all-or-nothing score, TRM partial-credit score) over the tasks in `truth`."""
    per_task: dict[str, list[bool]] = defaultdict(list)
    for key, answer in truth.items():
        top = [a for a, _, _ in ranked.get(key, [])[:k]]
        per_task[key[0]].append(answer in top)
    strict = sum(all(v) for v in per_task.values()) / len(per_task)
    partial = sum(sum(v) / len(v) for v in per_task.values()) / len(per_task)
    return strict, partial
