"""The 8 symmetries of the square, numbered as the HRM code (REFERENCE II.4), with inverses."""

from __future__ import annotations

import numpy as np

# 0 identity, 1-3 rot90 k=1..3, 4 fliplr, 5 flipud, 6 transpose, 7 anti-transpose.
INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)


def transform(grid: np.ndarray, k: int) -> np.ndarray:
    """Apply symmetry `k` to a 2-D grid."""
    if k == 0:
        return grid.copy()
    if 1 <= k <= 3:
        return np.rot90(grid, k).copy()
    if k == 4:
        return np.fliplr(grid).copy()
    if k == 5:
        return np.flipud(grid).copy()
    if k == 6:
        return grid.T.copy()
    if k == 7:
        return np.fliplr(np.rot90(grid, 1)).copy()
    raise ValueError(f"dihedral index {k} not in 0..7")


def inverse(grid: np.ndarray, k: int) -> np.ndarray:
    return transform(grid, INVERSE[k])
