"""Scoring a puzzle model on the test split, at several segment counts in one pass.

Evaluation runs every segment from the initial state (no halting, REFERENCE II.3); the
predictions after segment m are what the model gives with M_max = m, so one pass scores the
inference-time scaling curve. Sudoku and mazes: exact accuracy (every supervised token right)
and token accuracy. ARC: only argmax tokens and sigmoid(q_halt) leave the device; each
prediction is cropped, mapped back to the original task and voted (REFERENCE II.4).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import torch

from hrm.losses import IGNORE_LABEL
from hrm.puzzles import arc, voting
from hrm.puzzles import data as pdata

PASS_AT = (1, 2, 10, 100, 1000)
HEADLINE_K = 2


class Votes:
    """Per (task, test input): distinct original-space answers with vote count and summed confidence."""

    def __init__(self) -> None:
        self.tally: dict[tuple[int, int], dict[bytes, list]] = defaultdict(dict)

    def add(self, group: int, test_index: int, tokens: np.ndarray, trans: int, colors: np.ndarray,
            confidence: float) -> None:
        grid = arc.invert_answer(voting.crop(tokens.reshape(arc.GRID, arc.GRID)).astype(np.uint8), trans, colors)
        key = bytes([grid.shape[0], grid.shape[1] if grid.size else 0]) + grid.tobytes()
        entry = self.tally[(group, test_index)].setdefault(key, [0, 0.0, grid])
        entry[0] += 1
        entry[1] += confidence

    def ranked(self, group: int, test_index: int) -> list[np.ndarray]:
        answers = self.tally.get((group, test_index), {}).values()
        return [a[2] for a in sorted(answers, key=lambda a: (a[0], a[1] / a[0]), reverse=True)]


def arc_scores(votes: Votes, answers: list[list[np.ndarray]]) -> dict[str, float]:
    """pass@K all-or-nothing per task (HRM) and with partial credit per test input (TRM)."""
    out: dict[str, float] = {}
    for k in PASS_AT:
        strict, partial = [], []
        for g, truths in enumerate(answers):
            hits = [any(p.shape == t.shape and np.array_equal(p, t) for p in votes.ranked(g, i)[:k])
                    for i, t in enumerate(truths)]
            strict.append(all(hits))
            partial.append(sum(hits) / len(hits))
        out[f"pass@{k}"] = float(np.mean(strict))
        out[f"partial_pass@{k}"] = float(np.mean(partial))
    return out


def submission(votes: Votes, names: list[str], answers: list[list[np.ndarray]]) -> dict[str, list[dict]]:
    """Kaggle-style: per task, per test input, two attempts (the top two voted answers)."""
    out = {}
    for g, name in enumerate(names):
        entries = []
        for i in range(len(answers[g])):
            top = [a.tolist() for a in votes.ranked(g, i)[:2]] or [[[0]]]
            top += top[:1] * (2 - len(top))
            entries.append({"attempt_1": top[0], "attempt_2": top[1]})
        out[name] = entries
    return out


@torch.no_grad()
def predict_segments(model: torch.nn.Module, split, idx: np.ndarray, puzzle_of: np.ndarray, device: torch.device,
             autocast: torch.autocast, wanted: set[int]) -> Iterable[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    x, y, pid = pdata.tensors(split, idx, puzzle_of, device)
    carry = model.initial_carry(*x.shape)
    for m in range(1, max(wanted) + 1):
        with autocast:
            out = model.segment(carry, x, pid)
        carry = out.carry
        if m in wanted:
            yield m, out.logits.argmax(-1), torch.sigmoid(out.q_halt.float()), y


def score_test(model: torch.nn.Module, data: pdata.PuzzleData, batch: int, device: torch.device,
               autocast: torch.autocast, segments: Iterable[int], votes_out: dict[int, Votes] | None = None
               ) -> dict[str, dict[str, float]]:
    """Scores after each segment count in `segments`; `headline` is exact accuracy or ARC pass@2."""
    model.eval()
    split, wanted = data.test, set(segments)
    puzzle_of = pdata.example_puzzles(split)
    is_arc = data.augmentations is not None
    exact = {m: 0 for m in wanted}
    tokens_right = {m: 0 for m in wanted}
    tokens_total = 0
    votes = {m: Votes() for m in wanted} if is_arc else {}
    if is_arc:
        group_of, test_index, ids = pdata.example_tasks(data)
    n = len(split.inputs)
    for start in range(0, n, batch):
        idx = np.arange(start, min(n, start + batch))
        for m, pred, conf, y in predict_segments(model, split, idx, puzzle_of, device, autocast, wanted):
            valid = y != IGNORE_LABEL
            right = (pred == y) & valid
            exact[m] += int((right.sum(-1) == valid.sum(-1)).sum())
            tokens_right[m] += int(right.sum())
            if m == max(wanted):
                tokens_total += int(valid.sum())
            if is_arc:
                pred_np, conf_np = pred.to(torch.uint8).cpu().numpy(), conf.cpu().numpy()
                for j, e in enumerate(idx):
                    aug = data.augmentations[ids[e]]
                    votes[m].add(int(group_of[e]), int(test_index[e]), pred_np[j], int(aug[0]), aug[1:], float(conf_np[j]))
    result = {}
    answers = None
    if is_arc:
        answers = [[np.array(a, np.uint8) for a in task] for task in data.tasks["answers"].values()]
    for m in sorted(wanted):
        r = {"exact_acc": exact[m] / n, "token_acc": tokens_right[m] / max(1, tokens_total)}
        if is_arc:
            r.update(arc_scores(votes[m], answers))
            r["headline"], r["headline_name"] = r[f"pass@{HEADLINE_K}"], f"pass@{HEADLINE_K}"
        else:
            r["headline"], r["headline_name"] = r["exact_acc"], "exact_acc"
        result[str(m)] = r
    if votes_out is not None:
        votes_out.update(votes)
    return result
