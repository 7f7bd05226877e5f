"""Sudoku: an exact solver that counts guesses, a seeded generator, validity-preserving shuffles.

A grid is an int array of n*n cells (0 = blank, 1..n digits) with boxes of `Box(rows, cols)`,
n = rows * cols: the paper's 9x9 is Box(3, 3), the demo's 6x6 is Box(2, 3). The solver is a
bitmask backtracker with the most-constrained-cell rule; `guesses` counts branching choices (a
difficulty rating, like tdoku's backtrack count, but not equal to it).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from hrm.core.errors import DataError


@dataclass(frozen=True)
class Box:
    """Box height and width; the grid side n is their product."""

    rows: int = 3
    cols: int = 3

    @property
    def n(self) -> int:
        return self.rows * self.cols

    @property
    def cells(self) -> int:
        return self.n * self.n

    @cached_property
    def units(self) -> tuple[list[int], list[int], list[int]]:
        """Row, column and box index of every cell."""
        n = self.n
        return ([i // n for i in range(n * n)], [i % n for i in range(n * n)],
                [(i // n) // self.rows * self.rows + (i % n) // self.cols for i in range(n * n)])


NINE = Box(3, 3)


def parse(text: str, where: str) -> np.ndarray:
    """An 81-character puzzle or solution ('.' or '0' blank); errors name `where` (file and row)."""
    if len(text) != 81:
        raise DataError(f"{where}: {len(text)} characters, a Sudoku needs 81")
    bad = sorted({ch for ch in text if ch not in ".0123456789"})
    if bad:
        raise DataError(f"{where}: foreign characters {''.join(bad)!r} (allowed: digits and '.')")
    return np.array([0 if ch == "." else int(ch) for ch in text], dtype=np.int64)


def is_valid_solution(grid: np.ndarray, box: Box = NINE) -> bool:
    n = box.n
    g = np.asarray(grid).reshape(n, n)
    if g.min() < 1 or g.max() > n:
        return False
    boxes = [g[r:r + box.rows, c:c + box.cols].ravel() for r in range(0, n, box.rows) for c in range(0, n, box.cols)]
    return all(len(set(u.tolist())) == n for u in list(g) + list(g.T) + boxes)


@dataclass
class Solve:
    solutions: list[np.ndarray]
    guesses: int


def solve(grid: np.ndarray, limit: int = 2, rng: np.random.Generator | None = None, box: Box = NINE) -> Solve:
    """Up to `limit` solutions of `grid`; `rng` shuffles the digit order (for random full grids)."""
    n, (row, col, bx) = box.n, box.units
    full = (1 << (n + 1)) - 2                                 # bits 1..n
    cells = [int(v) for v in np.asarray(grid).ravel()]
    rows, cols, boxes = [0] * n, [0] * n, [0] * n
    for i, v in enumerate(cells):
        if v:
            bit = 1 << v
            if (rows[row[i]] | cols[col[i]] | boxes[bx[i]]) & bit:
                return Solve([], 0)                    # the givens already clash
            rows[row[i]] |= bit
            cols[col[i]] |= bit
            boxes[bx[i]] |= bit
    out: list[np.ndarray] = []
    guesses = 0

    def search() -> None:
        nonlocal guesses
        best, best_mask, best_n = -1, 0, n + 1
        for i in range(len(cells)):
            if cells[i] == 0:
                mask = full & ~(rows[row[i]] | cols[col[i]] | boxes[bx[i]])
                k = bin(mask).count("1")
                if k < best_n:
                    best, best_mask, best_n = i, mask, k
                    if k <= 1:
                        break
        if best < 0:
            out.append(np.array(cells, dtype=np.int64))
            return
        if best_n == 0:
            return
        digits = [d for d in range(1, n + 1) if best_mask >> d & 1]
        if rng is not None:
            rng.shuffle(digits)
        if best_n > 1:
            guesses += 1
        r, c, b = row[best], col[best], bx[best]
        for d in digits:
            bit = 1 << d
            cells[best] = d
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
            search()
            rows[r] &= ~bit
            cols[c] &= ~bit
            boxes[b] &= ~bit
            cells[best] = 0
            if len(out) >= limit:
                return

    search()
    return Solve(out, guesses)


def generate(seed: int, box: Box = NINE, blanks: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """A puzzle with exactly one solution, its solution and its rating (solver guesses).

    Cells are blanked in a random order while the solution stays unique: all the way (a minimal
    puzzle, the hardest this seed gives) or until `blanks` cells are blank (an easier one).
    """
    rng = np.random.default_rng(seed)
    solution = solve(np.zeros(box.cells, dtype=np.int64), limit=1, rng=rng, box=box).solutions[0]
    puzzle = solution.copy()
    for i in rng.permutation(box.cells):
        if blanks is not None and (puzzle == 0).sum() >= blanks:
            break
        kept = puzzle[i]
        puzzle[i] = 0
        if len(solve(puzzle, limit=2, box=box).solutions) != 1:
            puzzle[i] = kept                           # removing it would allow a second solution
    return puzzle, solution, solve(puzzle, limit=2, box=box).guesses


def shuffle_batch(count: int, rng: np.random.Generator, box: Box = NINE) -> tuple[np.ndarray, np.ndarray]:
    """`count` random shuffles as (cell sources (count, n*n), digit maps (count, n+1)), vectorised.

    A shuffled grid is digits[k][grid[cells[k]]]; the same pair shuffles a puzzle and its solution.
    Bands and rows in band, stacks and columns in stack, digits 1-n relabelled, and (square boxes
    only) a transpose with p = 0.5.
    """
    n = box.n

    def lines(groups: int, size: int) -> np.ndarray:
        order = rng.random((count, groups)).argsort(axis=1)
        inner = rng.random((count, groups, size)).argsort(axis=2)
        return (size * order[:, :, None] + inner).reshape(count, n)
    rows, cols = lines(box.cols, box.rows), lines(box.rows, box.cols)
    cells = rows[:, :, None] * n + cols[:, None, :]                  # (count, n, n) source cell
    transpose = rng.random(count) < 0.5                              # drawn always: the stream stays the same
    if box.rows == box.cols:
        cells = np.where(transpose[:, None, None], (cells % n) * n + cells // n, cells)
    digits = np.concatenate([np.zeros((count, 1), np.int64), rng.random((count, n)).argsort(axis=1) + 1], axis=1)
    return cells.reshape(count, n * n), digits
