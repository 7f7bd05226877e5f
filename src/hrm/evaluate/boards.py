"""Pictures of puzzle boards: what the model answers after each segment (the paper's Figure 7 idea)
for one Sudoku or maze, and for ARC each evaluation task's input, voted answer and truth.

Boards arrive as token grids in the built data's vocabulary (hrm.data.puzzles.build): Sudoku pad 0,
blank 1, digit d -> d + 1; mazes "# SGo" -> 1..5; ARC colours c -> c + 2 (grids here are already
cropped back to colours 0-9).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from hrm.evaluate.figures import save  # noqa: E402

# The usual ARC palette (colours 0-9).
ARC_COLOURS = ListedColormap(["#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00", "#AAAAAA", "#F012BE",
                              "#FF851B", "#7FDBFF", "#870C25"])
# Maze tokens 0-5: pad, wall, open, start, goal, path.
MAZE_COLOURS = ListedColormap(["#ffffff", "#303030", "#ffffff", "#2ECC40", "#FF4136", "#0074D9"])
WRONG = "#FF4136"


def _sudoku(ax: plt.Axes, given: np.ndarray, board: np.ndarray, truth: np.ndarray, box: tuple[int, int]) -> None:
    n = given.shape[0]
    box_rows, box_cols = box
    ax.set_xlim(0, n)
    ax.set_ylim(n, 0)
    for i in range(n + 1):
        ax.axhline(i, color="black", lw=1.6 if i % box_rows == 0 else 0.4)
        ax.axvline(i, color="black", lw=1.6 if i % box_cols == 0 else 0.4)
    for r in range(n):
        for c in range(n):
            if given[r, c] > 1:
                ax.text(c + 0.5, r + 0.5, str(given[r, c] - 1), ha="center", va="center", fontsize=9,
                        weight="bold")
            elif board[r, c] > 1:
                right = board[r, c] == truth[r, c]
                ax.text(c + 0.5, r + 0.5, str(board[r, c] - 1), ha="center", va="center", fontsize=9,
                        color="#0074D9" if right else WRONG)


def _maze(ax: plt.Axes, given: np.ndarray, board: np.ndarray, truth: np.ndarray, box: tuple[int, int]) -> None:
    ax.imshow(board, cmap=MAZE_COLOURS, vmin=0, vmax=5, interpolation="nearest")
    for r, c in np.argwhere(board != truth):
        ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor=WRONG, lw=1.2))


def segment_boards(kind: str, given: np.ndarray, boards: list[np.ndarray], truth: np.ndarray, title: str,
                   path: Path, box: tuple[int, int] = (3, 3)) -> None:
    """The input, the answer after each segment (wrong cells in red) and the truth, side by side
    (`box`: a Sudoku's box, height and width, for its thick lines)."""
    side = int(round(len(given) ** 0.5))
    grids = [g.reshape(side, side) for g in (given, *boards, truth)]
    names = ["input", *[f"segment {m + 1}" for m in range(len(boards))], "truth"]
    fig, axes = plt.subplots(1, len(grids), figsize=(1.7 * len(grids), 2.1), squeeze=False)
    for ax, grid, name in zip(axes[0], grids, names):
        draw = _sudoku if kind == "sudoku" else _maze
        draw(ax, grids[0], grid, grids[-1] if name != "input" else grid, box)
        wrong = int((grid != grids[-1]).sum()) if name.startswith("segment") else None
        ax.set_title(name if wrong is None else f"{name}\n{wrong} wrong" if wrong else f"{name}\nexact",
                     fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9, y=1.12)
    save(fig, path)


def arc_answers(tasks: list[tuple[str, np.ndarray, np.ndarray | None, np.ndarray]], title: str, path: Path) -> None:
    """One row per task: (name, test input, top voted answer or None, truth) as colour grids."""
    fig, axes = plt.subplots(len(tasks), 3, figsize=(5.4, 1.9 * len(tasks)), squeeze=False)
    for row, (name, inp, voted, truth) in zip(axes, tasks):
        solved = voted is not None and voted.shape == truth.shape and np.array_equal(voted, truth)
        for ax, grid, label in zip(row, (inp, voted, truth), ("input", "voted answer", "truth")):
            ax.set_xticks([])
            ax.set_yticks([])
            if grid is None or grid.size == 0:
                ax.text(0.5, 0.5, "no answer", ha="center", va="center", fontsize=8)
            else:
                ax.imshow(grid, cmap=ARC_COLOURS, vmin=0, vmax=9, interpolation="nearest")
            if label == "voted answer":
                label += " (exact)" if solved else " (wrong)"
            ax.set_title(f"{name}: {label}" if label == "input" else label, fontsize=7,
                         color="black" if label != "voted answer (wrong)" else WRONG)
    fig.suptitle(title, fontsize=9)
    save(fig, path)
