"""Reading a built puzzle data set for training and evaluation.

The training stream is the authors': every epoch visits each group once in a seeded random order,
takes one random version (puzzle) of it and all of that puzzle's examples; epochs follow each
other without a break and are cut into fixed-size batches (the last partial batch of the whole
run is dropped). The stream is a pure function of (seed, epoch), so a resumed run only needs the
position (epoch, offset) of its next example.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from hrm.core import paths
from hrm.core.errors import DataError
from hrm.core.gpu import to_device
from hrm.core.losses import IGNORE_LABEL
from hrm.data.puzzles.layout import AUGMENTATIONS, Metadata, PuzzleSplit, load_split, read_build_info
from hrm.data.puzzles.sources import PUZZLES


@dataclass(frozen=True)
class PuzzleData:
    name: str
    train: PuzzleSplit
    test: PuzzleSplit
    info: dict
    augmentations: np.ndarray | None      # (ids, 11) ARC only
    tasks: dict | None                    # ARC only: test inputs and answers by task

    @property
    def num_ids(self) -> int:
        return max(self.train.meta.num_puzzle_identifiers, self.test.meta.num_puzzle_identifiers)


def load(name: str) -> PuzzleData:
    built = paths.built_dir(name)
    info = read_build_info(built)
    train, test = load_split(built / "train"), load_split(built / "test")
    for field in ("seq_len", "vocab_size"):
        if getattr(train.meta, field) != getattr(test.meta, field):
            raise DataError(f"{built}: train and test disagree on {field}")
    spec = PUZZLES.get(name)
    if spec is not None and (train.meta.vocab_size, train.meta.seq_len) != (spec.classes, spec.seq_len):
        raise DataError(f"{built}: vocabulary {train.meta.vocab_size} and sequence length {train.meta.seq_len}, "
                        f"but {name} has {spec.classes} and {spec.seq_len} (built by other code); run "
                        f"`hrm build {name}` again")
    aug, tasks = None, None
    if info.get("kind") == "arc":
        aug = np.load(built / AUGMENTATIONS, allow_pickle=False)
        try:
            tasks = json.loads((built / "test" / "tasks.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{built / 'test' / 'tasks.json'}: unreadable ({e})") from None
        if len(aug) < train.meta.num_puzzle_identifiers:
            raise DataError(f"{built / AUGMENTATIONS}: {len(aug)} rows for {train.meta.num_puzzle_identifiers} ids")
    return PuzzleData(name, train, test, info, aug, tasks)


def epoch_examples(split: PuzzleSplit, seed: int, epoch: int) -> np.ndarray:
    """Example indices of one epoch: groups shuffled, one random puzzle per group, all its examples."""
    rng = np.random.default_rng([seed, epoch])
    gi, pi = split.group_indices, split.puzzle_indices
    groups = rng.permutation(split.groups)
    sizes = gi[groups + 1] - gi[groups]
    puzzles = gi[groups] + (rng.random(len(groups)) * sizes).astype(np.int64)
    starts, counts = pi[puzzles], pi[puzzles + 1] - pi[puzzles]
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(starts, counts) + offsets


def example_puzzles(split: PuzzleSplit) -> np.ndarray:
    """Puzzle index of every example."""
    return np.repeat(np.arange(len(split.puzzle_identifiers)), np.diff(split.puzzle_indices))


def total_steps(split: PuzzleSplit, epochs: int, batch: int) -> int:
    """The authors' count: epochs * groups * mean examples per puzzle / batch."""
    return int(epochs * split.groups * split.meta.mean_puzzle_examples / batch)


class Stream:
    """Fixed-size batches of the training stream; (epoch, offset) is the next example's position."""

    def __init__(self, split: PuzzleSplit, seed: int, batch: int, epoch: int = 1, offset: int = 0) -> None:
        self.split, self.seed, self.batch = split, seed, batch
        self.epoch, self.offset = epoch, offset
        self.order = epoch_examples(split, seed, epoch)
        self.puzzle_of = example_puzzles(split)

    def next(self) -> np.ndarray:
        parts, need = [], self.batch
        while need:
            take = self.order[self.offset:self.offset + need]
            parts.append(take)
            need -= len(take)
            self.offset += len(take)
            if self.offset == len(self.order):
                self.epoch, self.offset = self.epoch + 1, 0
                self.order = epoch_examples(self.split, self.seed, self.epoch)
        return np.concatenate(parts)


def tensors(split: PuzzleSplit, idx: np.ndarray, puzzle_of: np.ndarray, device: torch.device
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs (long), labels with the ignore id mapped to IGNORE_LABEL, and puzzle ids."""
    # Memory-mapped reads are fastest in file order: read the distinct rows sorted, then scatter back.
    order, back = np.unique(idx, return_inverse=True)
    x = torch.from_numpy(np.asarray(split.inputs[order])[back])
    y = torch.from_numpy(np.asarray(split.labels[order])[back])
    pid = torch.from_numpy(split.puzzle_identifiers[puzzle_of[idx]])
    return widen(x.to(device), y.to(device), pid.to(device), split.meta.ignore_label_id)


def widen(x: torch.Tensor, y: torch.Tensor, pid: torch.Tensor, ignore: int | None
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stored small ints -> the long tensors a model takes, with the ignore id mapped to IGNORE_LABEL."""
    y = y.long()
    if ignore is not None:
        y = torch.where(y == ignore, IGNORE_LABEL, y)
    return x.long(), y, pid.long()


class DeviceSplit:
    """A training split resident on the device: `tensors(idx)` gathers there what `tensors` reads on the
    host and copies (runtime.data_on_device). Stored as on disk (small ints); widened per batch."""

    def __init__(self, split: PuzzleSplit, device: torch.device) -> None:
        self.device, self.ignore = device, split.meta.ignore_label_id
        self.inputs = torch.from_numpy(np.array(split.inputs)).to(device)     # read whole, out of the memory map
        self.labels = torch.from_numpy(np.array(split.labels)).to(device)
        self.puzzle_ids = torch.from_numpy(split.puzzle_identifiers[example_puzzles(split)]).to(device)

    def tensors(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        i = to_device(torch.from_numpy(idx), self.device)       # the only copy: the batch's indices
        return widen(self.inputs[i], self.labels[i], self.puzzle_ids[i], self.ignore)


def example_tasks(data: PuzzleData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every test example: its group (task) index, its test-input index and its puzzle id."""
    split = data.test
    puzzle_of = example_puzzles(split)
    group_of_puzzle = np.repeat(np.arange(split.groups), np.diff(split.group_indices))
    test_index = np.arange(len(puzzle_of)) - split.puzzle_indices[puzzle_of]
    return group_of_puzzle[puzzle_of], test_index, split.puzzle_identifiers[puzzle_of]


def synthetic(dataset: str, examples: int, seed: int = 0) -> PuzzleData:
    """Random token sequences of the data set's length and vocabulary, one example per puzzle and group."""
    spec = PUZZLES[dataset]
    rng = np.random.default_rng(seed)
    meta = Metadata(seq_len=spec.seq_len, vocab_size=spec.classes, pad_id=0, ignore_label_id=0, blank_identifier_id=0,
                    num_puzzle_identifiers=examples + 1, total_groups=examples, mean_puzzle_examples=1.0,
                    total_puzzles=examples, total_examples=examples)
    counts = np.arange(examples + 1, dtype=np.int32)
    split = PuzzleSplit(rng.integers(1, spec.classes, (examples, spec.seq_len), dtype=np.uint8),
                        rng.integers(1, spec.classes, (examples, spec.seq_len), dtype=np.uint8),
                        counts[1:], counts, counts, meta)
    return PuzzleData(dataset, split, split, {}, None, None)
