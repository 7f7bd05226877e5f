"""The on-disk layout of a built puzzle data set (REFERENCE II.4), compatible with the authors'.

    <built>/identifiers.json           name of every puzzle id (0 = "<blank>")
    <built>/augmentations.npy          (ids, 11) uint8: dihedral transform, colour map (ARC only)
    <built>/build.json                 what was built from what, with which numbers
    <built>/<split>/all__inputs.npy    (examples, seq_len) uint8
    <built>/<split>/all__labels.npy    (examples, seq_len) uint8
    <built>/<split>/all__puzzle_identifiers.npy   (puzzles,) int32
    <built>/<split>/all__puzzle_indices.npy       (puzzles + 1,) int64: CSR examples of each puzzle
    <built>/<split>/all__group_indices.npy        (groups + 1,) int64: CSR puzzles of each group
    <built>/<split>/dataset.json       the authors' metadata fields

A group is one original item with all its augmented versions (puzzles); a puzzle has one or more
examples. Large arrays are allocated with a header and filled by positional writes, so builders
stream into them without holding the data set in memory, and readers memory-map them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hrm.core.errors import DataError

SPLITS = ("train", "test")
SET = "all"
ARRAYS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
METADATA = "dataset.json"
IDENTIFIERS = "identifiers.json"
AUGMENTATIONS = "augmentations.npy"
BUILD_INFO = "build.json"


@dataclass(frozen=True)
class Metadata:
    """The authors' PuzzleDatasetMetadata fields, plus exact totals."""

    seq_len: int
    vocab_size: int
    pad_id: int
    ignore_label_id: int | None
    blank_identifier_id: int
    num_puzzle_identifiers: int
    total_groups: int
    mean_puzzle_examples: float
    total_puzzles: int
    total_examples: int
    sets: tuple[str, ...] = (SET,)


def array_path(split_dir: Path, name: str) -> Path:
    return split_dir / f"{SET}__{name}.npy"


class Rows:
    """A (rows, seq_len) uint8 .npy file allocated up front and filled by positional writes.

    Safe to fill from several processes at once: each writes its own row range with pwrite.
    """

    def __init__(self, path: Path, rows: int, seq_len: int) -> None:
        arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(rows, seq_len))
        self.path, self.offset, self.row_bytes = path, arr.offset, seq_len
        del arr                                   # nothing was touched: the file is sparse until written

    def write(self, first_row: int, block: np.ndarray) -> None:
        data = np.ascontiguousarray(block, dtype=np.uint8)
        fd = os.open(self.path, os.O_WRONLY)
        try:
            view, pos = memoryview(data).cast("B"), self.offset + first_row * self.row_bytes
            while view:                           # pwrite may write less than asked
                n = os.pwrite(fd, view, pos)
                view, pos = view[n:], pos + n
        finally:
            os.close(fd)


def csr(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])


def write_index(split_dir: Path, puzzle_ids: np.ndarray, examples_per_puzzle: np.ndarray,
                puzzles_per_group: np.ndarray, meta: Metadata) -> None:
    np.save(array_path(split_dir, "puzzle_identifiers"), puzzle_ids.astype(np.int32))
    np.save(array_path(split_dir, "puzzle_indices"), csr(examples_per_puzzle))
    np.save(array_path(split_dir, "group_indices"), csr(puzzles_per_group))
    (split_dir / METADATA).write_text(json.dumps(asdict(meta), indent=1) + "\n")


def write_split(split_dir: Path, inputs: np.ndarray, labels: np.ndarray, puzzle_ids: np.ndarray,
                examples_per_puzzle: np.ndarray, puzzles_per_group: np.ndarray, meta: Metadata) -> None:
    """A whole split held in memory (Sudoku, mazes)."""
    split_dir.mkdir(parents=True, exist_ok=True)
    np.save(array_path(split_dir, "inputs"), inputs.astype(np.uint8))
    np.save(array_path(split_dir, "labels"), labels.astype(np.uint8))
    write_index(split_dir, puzzle_ids, examples_per_puzzle, puzzles_per_group, meta)


# ------------------------------------------------------------------ reading

@dataclass(frozen=True)
class PuzzleSplit:
    inputs: np.ndarray               # memory-mapped
    labels: np.ndarray
    puzzle_identifiers: np.ndarray
    puzzle_indices: np.ndarray
    group_indices: np.ndarray
    meta: Metadata

    @property
    def groups(self) -> int:
        return len(self.group_indices) - 1

    def head(self, n: int) -> PuzzleSplit:
        """The first `n` examples as a split of their own (the last puzzle and group cut where they end)."""
        n = min(n, len(self.inputs))
        puzzles = int(np.searchsorted(self.puzzle_indices[:-1], n))          # puzzles starting before n
        groups = int(np.searchsorted(self.group_indices[:-1], puzzles))
        return PuzzleSplit(self.inputs[:n], self.labels[:n], self.puzzle_identifiers[:puzzles],
                           np.append(self.puzzle_indices[:puzzles], n), np.append(self.group_indices[:groups], puzzles),
                           self.meta)


def _load_array(path: Path, mmap: bool) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: missing; run `python -m hrm build` for this data set")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npy array ({e})") from None


def _largest(array: np.ndarray, rows: int = 1 << 16) -> int:
    """The largest value of a memory-mapped array, read in slices (bounded memory, one pass)."""
    return max((int(array[i:i + rows].max()) for i in range(0, len(array), rows)), default=0)


def load_split(split_dir: Path) -> PuzzleSplit:
    """Memory-map one split and check the invariants a training run relies on."""
    try:
        raw = json.loads((split_dir / METADATA).read_text())
        meta = Metadata(**{**raw, "sets": tuple(raw.get("sets", (SET,)))})
    except FileNotFoundError:
        raise DataError(f"{split_dir / METADATA}: missing; run `python -m hrm build`") from None
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as e:
        raise DataError(f"{split_dir / METADATA}: malformed metadata ({e})") from None
    arrays = {n: _load_array(array_path(split_dir, n), mmap=n in ("inputs", "labels")) for n in ARRAYS}
    s = PuzzleSplit(**arrays, meta=meta)
    where = str(split_dir)
    n = len(s.inputs)
    checks = [
        (s.inputs.ndim == 2 and s.inputs.shape[1] == meta.seq_len,
         f"inputs shape {s.inputs.shape}, seq_len {meta.seq_len}"),
        (s.labels.shape == s.inputs.shape, f"labels shape {s.labels.shape} != inputs {s.inputs.shape}"),
        (s.inputs.dtype == np.uint8 and s.labels.dtype == np.uint8, "inputs/labels must be uint8"),
        (len(s.puzzle_indices) == len(s.puzzle_identifiers) + 1, "puzzle_indices must have one entry per puzzle + 1"),
        (len(s.puzzle_indices) > 0 and s.puzzle_indices[0] == 0 and s.puzzle_indices[-1] == n
         and bool(np.all(np.diff(s.puzzle_indices) > 0)), "puzzle_indices must rise from 0 to the example count"),
        (len(s.group_indices) > 1 and s.group_indices[0] == 0 and s.group_indices[-1] == len(s.puzzle_identifiers)
         and bool(np.all(np.diff(s.group_indices) > 0)), "group_indices must rise from 0 to the puzzle count"),
        (len(s.puzzle_identifiers) == 0 or (0 <= s.puzzle_identifiers.min()
         and s.puzzle_identifiers.max() < meta.num_puzzle_identifiers),
         "puzzle ids outside 0..num_puzzle_identifiers-1"),
        (meta.total_examples == n and meta.total_groups == len(s.group_indices) - 1,
         "metadata totals disagree with the arrays"),
        (_largest(s.inputs) < meta.vocab_size and _largest(s.labels) < meta.vocab_size,
         f"a token or label outside the vocabulary 0..{meta.vocab_size - 1}"),
    ]
    for ok, what in checks:
        if not ok:
            raise DataError(f"{where}: {what}")
    return s


def read_build_info(built: Path) -> dict:
    try:
        return json.loads((built / BUILD_INFO).read_text())
    except FileNotFoundError:
        raise DataError(f"{built / BUILD_INFO}: missing; run `python -m hrm build`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{built / BUILD_INFO}: malformed ({e})") from None
