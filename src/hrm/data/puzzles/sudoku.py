"""Sudoku: an exact solver that counts guesses, a seeded generator, validity-preserving shuffles.

Grids are int arrays of 81 cells, 0 = blank, 1..9 digits. The solver is a bitmask backtracker
with the most-constrained-cell rule; `guesses` counts branching choices (a difficulty rating,
like tdoku's backtrack count, but not equal to it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hrm.errors import DataError

ALL = 0x3FE                                             # bits 1..9
ROW = [i // 9 for i in range(81)]
COL = [i % 9 for i in range(81)]
BOX = [(i // 27) * 3 + (i % 9) // 3 for i in range(81)]


def parse(text: str, where: str) -> np.ndarray:
    """An 81-character puzzle or solution ('.' or '0' blank); errors name `where` (file and row)."""
    if len(text) != 81:
        raise DataError(f"{where}: {len(text)} characters, a Sudoku needs 81")
    bad = sorted({ch for ch in text if ch not in ".0123456789"})
    if bad:
        raise DataError(f"{where}: foreign characters {''.join(bad)!r} (allowed: digits and '.')")
    return np.array([0 if ch == "." else int(ch) for ch in text], dtype=np.int64)


def is_valid_solution(grid: np.ndarray) -> bool:
    g = np.asarray(grid).reshape(9, 9)
    if g.min() < 1 or g.max() > 9:
        return False
    units = list(g) + list(g.T) + [g[r:r + 3, c:c + 3].ravel() for r in (0, 3, 6) for c in (0, 3, 6)]
    return all(len(set(u.tolist())) == 9 for u in units)


@dataclass
class Solve:
    solutions: list[np.ndarray]
    guesses: int


def solve(grid: np.ndarray, limit: int = 2, rng: np.random.Generator | None = None) -> Solve:
    """Up to `limit` solutions of `grid`; `rng` shuffles the digit order (for random full grids)."""
    cells = [int(v) for v in np.asarray(grid).ravel()]
    rows, cols, boxes = [0] * 9, [0] * 9, [0] * 9
    for i, v in enumerate(cells):
        if v:
            bit = 1 << v
            if (rows[ROW[i]] | cols[COL[i]] | boxes[BOX[i]]) & bit:
                return Solve([], 0)                    # the givens already clash
            rows[ROW[i]] |= bit
            cols[COL[i]] |= bit
            boxes[BOX[i]] |= bit
    out: list[np.ndarray] = []
    guesses = 0

    def search() -> None:
        nonlocal guesses
        best, best_mask, best_n = -1, 0, 10
        for i in range(81):
            if cells[i] == 0:
                mask = ALL & ~(rows[ROW[i]] | cols[COL[i]] | boxes[BOX[i]])
                n = bin(mask).count("1")
                if n < best_n:
                    best, best_mask, best_n = i, mask, n
                    if n <= 1:
                        break
        if best < 0:
            out.append(np.array(cells, dtype=np.int64))
            return
        if best_n == 0:
            return
        digits = [d for d in range(1, 10) if best_mask >> d & 1]
        if rng is not None:
            rng.shuffle(digits)
        if best_n > 1:
            guesses += 1
        r, c, b = ROW[best], COL[best], BOX[best]
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


def generate(seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """A puzzle with exactly one solution, its solution and its rating (solver guesses)."""
    rng = np.random.default_rng(seed)
    solution = solve(np.zeros(81, dtype=np.int64), limit=1, rng=rng).solutions[0]
    puzzle = solution.copy()
    for i in rng.permutation(81):
        kept = puzzle[i]
        puzzle[i] = 0
        if len(solve(puzzle, limit=2).solutions) != 1:
            puzzle[i] = kept                           # removing it would allow a second solution
    return puzzle, solution, solve(puzzle, limit=2).guesses


def shuffle_batch(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`count` random shuffles as (cell sources (count, 81), digit maps (count, 10)), vectorised.

    A shuffled grid is digits[k][grid[cells[k]]]; the same pair shuffles a puzzle and its solution.
    Transpose with p = 0.5, bands and rows in band, stacks and columns in stack, digits 1-9 relabelled.
    """
    def lines() -> np.ndarray:
        bands = rng.random((count, 3)).argsort(axis=1)
        inner = rng.random((count, 3, 3)).argsort(axis=2)
        return (3 * bands[:, :, None] + inner).reshape(count, 9)
    rows, cols = lines(), lines()
    cells = rows[:, :, None] * 9 + cols[:, None, :]                  # (count, 9, 9) source cell
    transpose = rng.random(count) < 0.5
    cells = np.where(transpose[:, None, None], (cells % 9) * 9 + cells // 9, cells)
    digits = np.concatenate([np.zeros((count, 1), np.int64), rng.random((count, 9)).argsort(axis=1) + 1], axis=1)
    return cells.reshape(count, 81), digits
