"""Puzzle groundwork: inverses of every augmentation, Sudoku/maze generators, ARC voting."""

from __future__ import annotations

import numpy as np
import pytest

from hrm.core.errors import DataError
from hrm.data.puzzles import arc, dihedral, maze, sudoku
from hrm.evaluate import voting


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


def test_sudoku_shuffles_preserve_validity_and_are_permutations() -> None:
    _, solution, _ = sudoku.generate(3)
    cells, digits = sudoku.shuffle_batch(20, np.random.default_rng(0))
    for c, d in zip(cells, digits):
        moved = d[solution[c]]
        assert sudoku.is_valid_solution(moved)
        assert sorted(c.tolist()) == list(range(81)) and d[0] == 0 and sorted(d.tolist()) == list(range(10))


def test_sudoku_parse_errors_name_the_row() -> None:
    with pytest.raises(DataError, match=r"train.csv row 7: 80 characters"):
        sudoku.parse("1" * 80, "train.csv row 7")
    with pytest.raises(DataError, match=r"foreign characters 'x'"):
        sudoku.parse("x" + "." * 80, "train.csv row 2")


def test_generated_maze_has_the_promised_path() -> None:
    question, answer = maze.generate(seed=5, size=30, min_path=110)
    path = maze.shortest_path(question)
    assert maze.shortest_paths(question) == 1          # the answer is the only shortest path
    assert path is not None and len(path) - 1 > 110
    assert (answer == maze.PATH).sum() == len(path) - 2
    assert set(np.unique(maze.tokens(answer))) <= {1, 2, 3, 4, 5}
    # The path in the answer is connected from S to G through 'o' cells only.
    walk = answer.copy()
    walk[walk == maze.OPEN] = maze.WALL
    walk[walk == maze.PATH] = maze.OPEN
    assert maze.shortest_path(walk) is not None


def test_shortest_paths_are_counted() -> None:
    grid = np.array([list(row) for row in ("S  ", " # ", "  G")])     # around the wall either way: 2
    assert maze.shortest_paths(grid) == 2
    grid[0, 1] = maze.WALL
    assert maze.shortest_paths(grid) == 1
    grid[1, 0] = maze.WALL
    assert maze.shortest_paths(grid) == 0


def test_a_maze_without_border_uses_every_token_and_keeps_a_shortest_path() -> None:
    question, answer = maze.generate(seed=3, size=7, min_path=8, loops=0.0, border=False)
    assert question.shape == (7, 7) and (question[[0, -1], :] != maze.WALL).any()   # no outer wall
    maze.check_answer(question, answer, "generated")                           # a shortest S-to-G path
    assert len(maze.shortest_path(question)) - 1 > 8
    with pytest.raises(ValueError, match="odd size"):
        maze.generate(seed=3, size=6, min_path=2, border=False)


def test_generated_test_mazes_are_unseen_in_training_in_any_orientation() -> None:
    from hrm.data.puzzles.build import generated_mazes
    from hrm.data.puzzles.sources import Generated

    src = Generated(train=300, test=100, seed=4, size=5, min_path=2, loops=0.0, border=False)   # small: repeats
    splits = generated_mazes(src)
    seen = {dihedral.transform(q, t).tobytes() for q in splits["train"][0] for t in range(8)}
    test = [q.tobytes() for q in splits["test"][0]]
    assert len(splits["test"][0]) == 100 and not seen & set(test) and len(set(test)) == len(test)
    raw = [maze.tokens(maze.generate(4 * 1_000_003 + i, 5, 2, 0.0, False)[0]).tobytes() for i in range(300, 400)]
    assert seen & set(raw)            # without the filter some test mazes would repeat training ones


@pytest.mark.parametrize("text,msg", [("#" * 899, "899 characters"), ("S" + "G" + "x" * 898, "foreign"),
                                      ("S" + " " * 899, "0 'G' cells"), ("SS" + "G" + " " * 897, "2 'S' cells")])
def test_bad_mazes_are_named(text: str, msg: str) -> None:
    with pytest.raises(DataError, match=msg):
        maze.parse(text, 30, "test.csv row 3")


def _canvas(grid: np.ndarray) -> np.ndarray:
    tokens = np.zeros((30, 30), dtype=np.int64)
    h, w = grid.shape
    tokens[:h, :w] = grid + arc.COLOR_OFFSET
    tokens[h, : w + 1] = arc.EOS
    tokens[: h + 1, w] = arc.EOS
    return tokens


def test_crop_stops_at_pad_and_eos() -> None:
    grid = np.array([[3, 0], [1, 9], [2, 2]])
    assert np.array_equal(voting.crop(_canvas(grid)), grid)
    assert voting.crop(np.zeros((30, 30), dtype=np.int64)).size == 0


def _version(answer: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, int, np.ndarray]:
    """What the model sees for one augmented version: the answer under dihedral k and a colour map
    drawn as the builder does (0 fixed, 1-9 permuted), rendered on the canvas."""
    colors = np.concatenate([[0], np.random.default_rng(seed).permutation(9) + 1]).astype(np.uint8)
    return _canvas(dihedral.transform(colors[answer], k)), k, colors


def test_votes_invert_real_augmentations_count_and_break_ties_by_confidence() -> None:
    right, wrong, other = np.array([[1, 2, 3], [4, 5, 6]]), np.array([[7]]), np.array([[6, 6]])
    v = voting.Votes()
    for answer, k, seed, conf in ((right, 1, 1, 0.2), (right, 6, 2, 0.3), (right, 7, 5, 0.1),
                                  (wrong, 0, 3, 0.9), (wrong, 3, 4, 0.8), (wrong, 4, 6, 0.7), (other, 5, 7, 0.99)):
        v.add(0, 0, *_version(answer, k, seed), conf)
    # Every version of `right` is a different grid on the canvas, yet all map back to one answer.
    # Three votes each: the tie goes to the higher mean confidence (wrong: 0.8 against 0.2).
    assert [a.tolist() for a in v.ranked(0, 0)] == [wrong.tolist(), right.tolist(), other.tolist()]
    scores = voting.arc_scores(v, [[right.astype(np.uint8)]])
    assert scores["pass@1"] == 0.0 and scores["pass@2"] == 1.0


def test_inverse_of_every_transform_and_colour_map_recovers_the_answer() -> None:
    answer = np.array([[1, 2, 0], [3, 4, 5]])
    for k in range(8):
        v = voting.Votes()
        v.add(0, 0, *_version(answer, k, seed=k), 0.5)
        assert v.ranked(0, 0)[0].tolist() == answer.tolist(), k


def test_all_or_nothing_versus_partial_credit_and_the_two_attempt_submission() -> None:
    a, b = np.array([[1]]), np.array([[2]])
    v = voting.Votes()
    v.add(0, 0, *_version(a, 2, 1), 0.5)           # test input 0: right
    v.add(0, 1, *_version(a, 4, 2), 0.5)           # test input 1: wrong (truth is b)
    scores = voting.arc_scores(v, [[a.astype(np.uint8), b.astype(np.uint8)]])
    assert (scores["pass@2"], scores["partial_pass@2"]) == (0.0, 0.5)
    sub = voting.submission(v, ["task"], [[a, b]])
    assert sub == {"task": [{"attempt_1": [[1]], "attempt_2": [[1]]}, {"attempt_1": [[1]], "attempt_2": [[1]]}]}


def test_pooled_votes_add_up_and_survive_the_round_trip_through_arrays() -> None:
    right, wrong = np.array([[1, 2, 3], [4, 5, 6]]), np.array([[7]])
    first, second = voting.Votes(), voting.Votes()
    first.add(0, 0, *_version(wrong, 1, 1), 0.9)          # one checkpoint: wrong wins alone
    second.add(0, 0, *_version(right, 2, 2), 0.4)         # the next: right twice
    second.add(0, 0, *_version(right, 5, 3), 0.3)
    second.add(1, 0, *_version(wrong, 0, 4), 0.5)
    pooled = voting.Votes.from_arrays(first.arrays())
    pooled.merge(voting.Votes.from_arrays(second.arrays()))
    assert [a.tolist() for a in pooled.ranked(0, 0)] == [right.tolist(), wrong.tolist()]
    assert [a.tolist() for a in first.ranked(0, 0)] == [wrong.tolist()]
    assert {w: sorted((n, round(c, 6)) for n, c, _ in a.values()) for w, a in pooled.tally.items()} == {
        (0, 0): [(1, 0.9), (2, 0.7)], (1, 0): [(1, 0.5)]}
    assert voting.Votes.from_arrays(voting.Votes().arrays()).tally == {}


def test_a_sudoku_board_draws_its_own_boxes() -> None:
    """A 12x12 Sudoku of 3x4 boxes: thick lines every 3 rows and every 4 columns (not re-derived as 2x6)."""
    import matplotlib.pyplot as plt

    from hrm.evaluate import boards

    grid = np.ones((12, 12), dtype=np.int64)
    fig, ax = plt.subplots()
    boards._sudoku(ax, grid, grid, grid, (3, 4))
    thick = [line for line in ax.lines if line.get_linewidth() > 1]
    rows = sorted({line.get_ydata()[0] for line in thick if line.get_ydata()[0] == line.get_ydata()[1]})
    cols = sorted({line.get_xdata()[0] for line in thick if line.get_xdata()[0] == line.get_xdata()[1]})
    plt.close(fig)
    assert rows == [0, 3, 6, 9, 12] and cols == [0, 4, 8, 12]
