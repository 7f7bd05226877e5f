"""Data that would build or load and then fail (or train silently) on nonsense: mazes of another size,
answers that are not a shortest S-to-G path, built arrays with a token outside the vocabulary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import real_params, write_params

from hrm.cli import main
from hrm.core import paths
from hrm.data.puzzles import layout, maze

MAZE = ("#####"
        "#S  #"
        "# # #"
        "#  G#"
        "#####")


def _answer(cells: list[tuple[int, int]]) -> str:
    grid = np.array(list(MAZE)).reshape(5, 5)
    for r, c in cells:
        grid[r, c] = maze.PATH
    return "".join(grid.ravel())


@pytest.mark.parametrize("cells,message", [
    ([(1, 2), (1, 3), (2, 3)], None),                           # S right, right, down, down to G: shortest
    ([(2, 1), (3, 1), (3, 2)], None),                           # the other shortest path
    ([(1, 2), (1, 3)], "2 path cells not joining S to G"),      # stops short
    ([(1, 2), (1, 3), (2, 3), (2, 1)], "4 path cells joining S to G; a shortest path has 3"),   # a stray cell
])
def test_a_maze_answer_must_be_a_shortest_path(cells: list[tuple[int, int]], message: str | None) -> None:
    grid = maze.parse(MAZE, 5, "row 2")
    answer = maze.parse(_answer(cells), 5, "row 2", answer=True)
    if message is None:
        maze.check_answer(grid, answer, "row 2")
    else:
        with pytest.raises(Exception, match=message):
            maze.check_answer(grid, answer, "row 2")


def _maze_csv(folder: Path, question: str, answer: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        (folder / f"{split}.csv").write_text(f"question,answer\n{question},{answer}\n")


def test_a_maze_set_of_smaller_mazes_does_not_build(project: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    _maze_csv(tmp_path / "maze-30x30-hard-1k", MAZE, _answer([(1, 2), (1, 3), (2, 3)]))
    assert main(["download", "maze-hard-1k", "--from", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["build", "maze-hard-1k"]) == 2
    assert "25 characters, a 30x30 maze needs 900" in capsys.readouterr().err
    assert not paths.built_dir("maze-hard-1k").exists()


def test_a_built_token_outside_the_vocabulary_is_refused_on_load(project: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["download", "maze-demo"]) == 0 and main(["build", "maze-demo"]) == 0
    inputs = layout.array_path(paths.built_dir("maze-demo") / "test", "inputs")
    tokens = np.load(inputs)
    tokens[3, 5] = 6                                            # the maze vocabulary is 0..5
    np.save(inputs, tokens)
    write_params(project, real_params())
    capsys.readouterr()
    assert main(["train", "maze-demo-hrm", "--seed", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "a token or label outside the vocabulary 0..5" in err and len(err.splitlines()) == 1, err
    assert not paths.run_dir("demo", "maze-demo-hrm", 0).exists()
