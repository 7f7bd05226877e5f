"""Puzzle groundwork: inverses of every augmentation, Sudoku/maze generators, ARC voting."""

from __future__ import annotations

import numpy as np
import pytest

from hrm.errors import DataError
from hrm.puzzles import dihedral, maze, sudoku, voting


@pytest.mark.parametrize("k", range(8))
def test_dihedral_inverse_is_identity(k: int) -> None:
    grid = np.arange(12).reshape(3, 4)
    assert np.array_equal(dihedral.inverse(dihedral.transform(grid, k), k), grid)
    if k:
        assert not np.array_equal(dihedral.transform(grid, k), grid)


def test_dihedral_transforms_are_the_eight_distinct_symmetries() -> None:
    grid = np.arange(9).reshape(3, 3)
    images = {dihedral.transform(grid, k).tobytes() for k in range(8)}
    assert len(images) == 8
    assert np.array_equal(dihedral.transform(grid, 7), np.rot90(grid, 2).T)   # anti-transpose


def test_generated_sudoku_is_unique_and_rated() -> None:
    for seed in (1, 2):
        puzzle, solution, rating = sudoku.generate(seed)
        assert sudoku.is_valid_solution(solution)
        assert np.all((puzzle == 0) | (puzzle == solution))
        found = sudoku.solve(puzzle, limit=2)
        assert len(found.solutions) == 1 and np.array_equal(found.solutions[0], solution)
        assert rating >= 0 and 17 <= np.count_nonzero(puzzle) < 81
    assert np.array_equal(sudoku.generate(1)[0], sudoku.generate(1)[0])   # seeded


def test_solver_counts_multiple_solutions_and_detects_clashes() -> None:
    assert len(sudoku.solve(np.zeros(81, dtype=np.int64), limit=2).solutions) == 2
    clash = np.zeros(81, dtype=np.int64)
    clash[0] = clash[1] = 5
    assert sudoku.solve(clash).solutions == []


def test_sudoku_shuffle_preserves_validity_and_inverts() -> None:
    _, solution, _ = sudoku.generate(3)
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = sudoku.random_shuffle(rng)
        moved = sudoku.apply(solution, s)
        assert sudoku.is_valid_solution(moved)
        assert np.array_equal(sudoku.invert(moved, s), solution)


def test_sudoku_parse_errors_name_the_row() -> None:
    with pytest.raises(DataError, match=r"train.csv row 7: 80 characters"):
        sudoku.parse("1" * 80, "train.csv row 7")
    with pytest.raises(DataError, match=r"foreign characters 'x'"):
        sudoku.parse("x" + "." * 80, "train.csv row 2")


def test_generated_maze_has_the_promised_path() -> None:
    question, answer = maze.generate(seed=5, size=30, min_path=110)
    path = maze.shortest_path(question)
    assert path is not None and len(path) - 1 > 110
    assert (answer == maze.PATH).sum() == len(path) - 2
    assert set(np.unique(maze.tokens(answer))) <= {1, 2, 3, 4, 5}
    # The path in the answer is connected from S to G through 'o' cells only.
    walk = answer.copy()
    walk[walk == maze.OPEN] = maze.WALL
    walk[walk == maze.PATH] = maze.OPEN
    assert maze.shortest_path(walk) is not None


@pytest.mark.parametrize("text,msg", [("#" * 899, "899 characters"), ("S" + "G" + "x" * 898, "foreign"),
                                      ("S" + " " * 899, "0 'G' cells"), ("SS" + "G" + " " * 897, "2 'S' cells")])
def test_bad_mazes_are_named(text: str, msg: str) -> None:
    with pytest.raises(DataError, match=msg):
        maze.parse(text, 30, "test.csv row 3")


def _canvas(grid: np.ndarray) -> np.ndarray:
    tokens = np.zeros((30, 30), dtype=np.int64)
    h, w = grid.shape
    tokens[:h, :w] = grid + voting.COLOR_OFFSET
    tokens[h, : w + 1] = voting.EOS
    tokens[: h + 1, w] = voting.EOS
    return tokens


def test_crop_stops_at_pad_and_eos() -> None:
    grid = np.array([[3, 0], [1, 9], [2, 2]])
    assert np.array_equal(voting.crop(_canvas(grid)), grid)
    assert voting.crop(np.zeros((30, 30), dtype=np.int64)).size == 0


def _prediction(task: str, answer: np.ndarray, k: int, conf: float, seed: int = 0) -> voting.Prediction:
    colors = np.concatenate([[0], np.random.default_rng(seed).permutation(9) + 1])
    augmented = dihedral.transform(colors[answer], k)
    return voting.Prediction(task, 0, _canvas(augmented), k, colors, conf)


def test_votes_are_inverted_counted_and_tie_broken_by_confidence() -> None:
    right, wrong, other = np.array([[1, 2], [3, 4]]), np.array([[5]]), np.array([[6, 6]])
    preds = [_prediction("t1", right, 1, 0.2, seed=1), _prediction("t1", right, 6, 0.3, seed=2),
             _prediction("t1", wrong, 0, 0.9), _prediction("t1", wrong, 3, 0.8, seed=4),
             _prediction("t1", other, 5, 0.99)]
    ranked = voting.vote(preds)[("t1", 0)]
    # Two answers with 2 votes each: the tie goes to the higher mean confidence (wrong: 0.85).
    assert [(np.array(a).tolist(), n) for a, n, _ in ranked] == [([[5]], 2), ([[1, 2], [3, 4]], 2), ([[6, 6]], 1)]
    truth = {("t1", 0): tuple(map(tuple, right.tolist()))}
    assert voting.pass_at_k(voting.vote(preds), truth, 1) == (0.0, 0.0)
    assert voting.pass_at_k(voting.vote(preds), truth, 2) == (1.0, 1.0)


def test_all_or_nothing_versus_partial_credit() -> None:
    a, b = np.array([[1]]), np.array([[2]])
    preds = [_prediction("t", a, 0, 0.5), voting.Prediction("t", 1, _canvas(a), 0, np.arange(10), 0.5)]
    truth = {("t", 0): ((1,),), ("t", 1): tuple(map(tuple, b.tolist()))}
    assert voting.pass_at_k(voting.vote(preds), truth, 2) == (0.0, 0.5)
