"""Reasoning-study data: augmentation inverses, the ARC builder on real tasks, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hrm.core.errors import DataError
from hrm.data.puzzles import arc, build, sudoku
from hrm.data.puzzles.build_arc import build_arc
from hrm.data.puzzles.layout import load_split
from hrm.evaluate import voting
from hrm.evaluate.voting import Votes, arc_scores


def test_sudoku_batch_shuffles_keep_solutions_valid_and_invert() -> None:
    puzzle, solution, _ = sudoku.generate(3)
    cells, digits = sudoku.shuffle_batch(50, np.random.default_rng(0))
    for k in range(50):
        q, a = digits[k][puzzle[cells[k]]], digits[k][solution[cells[k]]]
        assert sudoku.is_valid_solution(a)
        assert np.all((q == 0) | (q == a))                       # givens still agree with the solution
        back = np.empty(81, np.int64)
        back[cells[k]] = np.argsort(digits[k])[a]                 # inverse: undo digits, then cells
        assert np.array_equal(back, solution)
    assert len({c.tobytes() for c in cells}) == 50


@pytest.mark.parametrize("t", range(8))
def test_arc_version_inverts_to_the_original(t: int) -> None:
    rng = np.random.default_rng(t)
    grid = rng.integers(0, 10, size=(3, 5)).astype(np.uint8)
    colors = np.concatenate([[0], rng.permutation(9) + 1]).astype(np.uint8)
    moved = colors[arc.dihedral.transform(grid, t)]
    assert np.array_equal(arc.invert_answer(moved, t, colors), grid)


def _task(name: str, grids: list[list[list[int]]], evaluation: bool = False) -> arc.Task:
    pairs = tuple((np.array(g, np.uint8), np.array(g, np.uint8)) for g in grids)
    return arc.Task(name, evaluation, pairs[:-1], pairs[-1:])


def test_versions_are_distinct_and_capped_by_the_task_symmetry() -> None:
    # One colour; the diagonal grid has 2 orientations under the 8 symmetries, the rest 1: 9 x 2.
    mono = _task("mono", [[[1, 1], [1, 1]], [[0, 1], [1, 0]], [[1]]])
    v = arc.augment(mono, 1000, 5, np.random.default_rng(0))
    assert len(v) == 18 and v.dihedral[0] == 0 and np.array_equal(v.colors[0], np.arange(10))
    rich = _task("rich", [[[1, 2, 3], [4, 5, 6]], [[7, 8, 9]]])
    v = arc.augment(rich, 50, 5, np.random.default_rng(0))
    keys = {(int(t), c.tobytes()) for t, c in zip(v.dihedral, v.colors)}
    assert len(v) == 51 and len(keys) == 51


def test_arc_counts_of_the_authors_builder(shared_data: Path) -> None:
    """ARC-AGI-1 + ConceptARC at 1,000 versions: within 0.5% of the authors' counts, 164 tasks short."""
    tasks = (arc.load_folder(shared_data / "arc-agi-1/data/training", False)
             + arc.load_folder(shared_data / "arc-agi-1/data/evaluation", True)
             + arc.load_folder(shared_data / "conceptarc/corpus", False))
    sizes = np.array([len(arc.augment(t, 1000, 5, np.random.default_rng([42, i]))) for i, t in enumerate(tasks)])
    train_examples = sum(s * len(t.train if t.evaluation else t.pairs) for s, t in zip(sizes, tasks))
    test = [(s, t) for s, t in zip(sizes, tasks) if t.evaluation]
    expected = {"train versions": (sizes.sum(), 876_411), "train examples": (train_examples, 3_633_425),
                "test versions": (sum(s for s, _ in test), 368_153),
                "test examples": (sum(s * len(t.test) for s, t in test), 385_818)}
    for what, (ours, theirs) in expected.items():
        assert abs(ours - theirs) / theirs < 0.005, what
    assert (sizes < 1001).sum() == 164 and sizes.min() == 9


def test_arc_build_of_real_evaluation_tasks(shared_data: Path, tmp_path: Path) -> None:
    tasks = arc.load_folder(shared_data / "arc-agi-1/data/evaluation", True)[:40]
    counts = build_arc(tasks, tmp_path, count=3, tries_factor=5, seed=42, workers=2)
    train, test = load_split(tmp_path / "train"), load_split(tmp_path / "test")
    assert counts.train_versions == counts.test_versions == len(train.puzzle_identifiers) == 4 * 40
    assert train.groups == test.groups == 40
    # The same version has the same puzzle id in both splits (its embedding is learned on train).
    assert np.array_equal(train.puzzle_identifiers, test.puzzle_identifiers)
    aug = np.load(tmp_path / "augmentations.npy")
    names = json.loads((tmp_path / "identifiers.json").read_text())
    assert len(names) == len(aug) == train.meta.num_puzzle_identifiers
    for p, pid in enumerate(test.puzzle_identifiers):
        task = tasks[p // 4]
        assert names[pid].split("_")[0] == task.name
        for j, e in enumerate(range(test.puzzle_indices[p], test.puzzle_indices[p + 1])):
            canvas = np.asarray(test.labels[e]).reshape(30, 30)
            answer = arc.invert_answer(voting.crop(canvas).astype(np.uint8), int(aug[pid, 0]), aug[pid, 1:])
            assert np.array_equal(answer, task.test[j][1])        # test grids sit at the corner, invertible
    # Training examples: all but one per version are translated; tokens stay in the vocabulary.
    at_corner = [int(np.asarray(train.inputs[e]).reshape(30, 30)[0, 0] >= arc.COLOR_OFFSET)
                 for e in range(train.puzzle_indices[0], train.puzzle_indices[1])]
    assert sum(at_corner) >= 1
    assert int(np.asarray(train.inputs).max()) < arc.VOCAB


@pytest.mark.parametrize("grid,msg", [([[1, 2], [3]], "ragged"), ([[0] * 31], "1x31"),
                                      ([[1, 10]], "colours outside 0-9"), ([[1, -1]], "colours outside 0-9"),
                                      ([[1.5]], "colours outside 0-9")])
def test_bad_arc_grids_name_the_task(tmp_path: Path, grid: list, msg: str) -> None:
    bad = {"train": [{"input": grid, "output": [[1]]}], "test": [{"input": [[1]], "output": [[1]]}]}
    (tmp_path / "abcd1234.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match=msg) as err:
        arc.load_folder(tmp_path, False)
    assert "abcd1234" in str(err.value) and "train[0].input" in str(err.value)


def _csv(tmp_path: Path, rows: list[tuple[str, str]]) -> Path:
    path = tmp_path / "train.csv"
    path.write_text("source,question,answer,rating\n" + "".join(f"x,{q},{a},0\n" for q, a in rows))
    return path


def test_bad_sudoku_rows_are_named(tmp_path: Path) -> None:
    puzzle, solution, _ = sudoku.generate(5)
    good = ("".join(str(d) if d else "." for d in puzzle), "".join(map(str, solution)))
    broken = "".join(map(str, solution))[:-2] + "11"
    for rows, msg in [([good, (good[0][:80], good[1])], "row 3 question: 80 characters"),
                      ([(good[0][:-1] + "x", good[1])], "row 2 question: foreign characters 'x'"),
                      ([(good[0], broken)], "row 2: the answer breaks the Sudoku rules")]:
        with pytest.raises(DataError, match=msg):
            build.sudoku_rows(_csv(tmp_path, rows))
    q, a = build.sudoku_rows(_csv(tmp_path, [good, (good[0], "")]))   # no answer: solved exactly
    assert np.array_equal(a[1], solution)


def test_bad_maze_rows_are_named(tmp_path: Path) -> None:
    q = "S" + " " * 7 + "G"
    a = "Soo" + "  o" + "  G"                     # a shortest S-to-G path
    for rows, msg in [([(q.replace("G", " "), a)], "row 2 question: 0 'G' cells"),
                      ([(q, a[:-1] + "S")], "row 2 answer: 2 'S' cells"),
                      ([(q[:-1], a[:-1])], "8 characters, a 3x3 maze needs 9"),
                      ([(q.replace(" ", "x"), a)], "foreign characters 'x'"),
                      ([(q, "Sooooooo" + "G")], "7 path cells joining S to G; a shortest path has 3")]:
        with pytest.raises(DataError, match=msg):
            build.maze_rows(_csv(tmp_path, rows), 3)
    tokens, labels = build.maze_rows(_csv(tmp_path, [(q, a)]), 3)
    assert tokens.shape == labels.shape == (1, 3, 3)


def test_votes_rank_by_count_then_confidence_and_score_both_ways() -> None:
    def canvas(grid: list[list[int]]) -> np.ndarray:
        out = np.zeros((30, 30), np.uint8)
        g = np.array(grid, np.uint8)
        out[:g.shape[0], :g.shape[1]] = g + 2
        out[g.shape[0], :g.shape[1]] = 1
        return out.ravel()
    ident = np.arange(10, dtype=np.uint8)
    v = Votes()
    v.add(0, 0, canvas([[1]]), 0, ident, 0.2)
    v.add(0, 0, canvas([[2]]), 0, ident, 0.9)                    # tie on votes: higher confidence first
    v.add(0, 1, canvas([[3]]), 0, ident, 0.5)
    assert [a.tolist() for a in v.ranked(0, 0)] == [[[2]], [[1]]]
    truth = [[np.array([[1]], np.uint8), np.array([[3]], np.uint8)]]
    scores = arc_scores(v, truth)
    assert scores["pass@1"] == 0.0 and scores["partial_pass@1"] == 0.5
    assert scores["pass@2"] == 1.0 and scores["partial_pass@2"] == 1.0


def test_stablemax_gradient_is_finite_where_its_branches_meet() -> None:
    import torch

    from hrm.core.losses import stablemax_cross_entropy
    logits = torch.tensor([[[1.0, 0.0, -1.0]]], requires_grad=True)     # x = 1: 1/(1-x) would be 1/0
    stablemax_cross_entropy(logits, torch.tensor([[0]])).sum().backward()
    assert torch.isfinite(logits.grad).all()
