"""Build an ARC data set (REFERENCE II.4): augmented versions of every task, streamed to disk.

Two passes over the tasks, both spread over every core with forked workers:
1. versions: the distinct (transform, colour map) pairs of each task (a few kB per task);
2. rendering: each worker draws its tasks' translations and writes their rows straight into the
   pre-allocated output files at offsets the parent computed from pass 1.
Nothing but one task's rows is ever held in memory, so peak memory does not grow with the data
set. Each task has its own random stream (seed, task index), so the result does not depend on
the number of workers, and the file order is the (sorted) task order.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hrm.core.errors import DataError
from hrm.core.progress import Progress
from hrm.data.puzzles import arc
from hrm.data.puzzles.layout import AUGMENTATIONS, IDENTIFIERS, Metadata, Rows, array_path, write_index

SWAPS = (1, 3, 6, 7)       # transforms that swap height and width


@dataclass(frozen=True)
class ArcCounts:
    train_versions: int
    train_examples: int
    test_versions: int
    test_examples: int
    tasks: int
    tasks_short: int           # fewer than count + 1 distinct versions
    min_versions: int


@dataclass(frozen=True)
class _Job:
    tasks: list[arc.Task]
    count: int
    tries_factor: int
    seed: int
    canvas: int
    versions: list[arc.Versions] | None = None
    files: dict[str, Rows] | None = None
    first_row: dict[str, np.ndarray] | None = None


_JOB: _Job | None = None          # set before forking: workers inherit it instead of unpickling it


def _parts(task: arc.Task) -> list[tuple[str, tuple, bool]]:
    """(split, pairs, translate): demonstrations (and test pairs of training tasks) go to train."""
    if task.evaluation:
        return [("train", task.train, True), ("test", task.test, False)]
    return [("train", task.pairs, True)]


def _augment_one(i: int) -> arc.Versions:
    job = _JOB
    return arc.augment(job.tasks[i], job.count, job.tries_factor, np.random.default_rng([job.seed, i, 0]))


def _render_one(i: int) -> None:
    job = _JOB
    task, versions = job.tasks[i], job.versions[i]
    rng = np.random.default_rng([job.seed, i, 1])
    n = len(versions)
    swap = np.isin(versions.dihedral, SWAPS)
    for split, pairs, translate in _parts(task):
        e_count = len(pairs)
        slabs = {k: np.zeros((n * e_count, job.canvas ** 2), np.uint8) for k in ("inputs", "labels")}
        still = rng.integers(0, e_count, size=n)            # one example per version stays at the corner
        for e, (inp, out) in enumerate(pairs):
            h, w = max(inp.shape[0], out.shape[0]), max(inp.shape[1], out.shape[1])
            rows = np.zeros(n, np.int64)
            cols = np.zeros(n, np.int64)
            if translate:
                span_r = np.where(swap, w, h)
                span_c = np.where(swap, h, w)
                move = still != e
                rows = np.where(move, (rng.random(n) * (job.canvas - span_r + 1)).astype(np.int64), 0)
                cols = np.where(move, (rng.random(n) * (job.canvas - span_c + 1)).astype(np.int64), 0)
            out_rows = np.arange(n) * e_count + e
            arc.render(arc.transformed(inp), versions, rows, cols, slabs["inputs"], out_rows, job.canvas)
            arc.render(arc.transformed(out), versions, rows, cols, slabs["labels"], out_rows, job.canvas)
        for k, slab in slabs.items():
            job.files[f"{split}/{k}"].write(int(job.first_row[split][i]), slab)


def _pool(workers: int) -> mp.pool.Pool:
    return mp.get_context("fork").Pool(workers)


def build_arc(tasks: list[arc.Task], dest: Path, count: int, tries_factor: int, seed: int,
              workers: int | None = None, canvas: int = arc.GRID) -> ArcCounts:
    """Write the train and test splits of `tasks` into `dest` (an empty folder), on a canvas*canvas grid."""
    global _JOB
    for task in tasks:
        for inp, out in task.pairs:
            side = max(*inp.shape, *out.shape)
            if side > canvas:
                raise DataError(f"{task.name}: a {side}-cell grid side does not fit the {canvas}x{canvas} canvas")
    workers = workers or os.cpu_count() or 1
    seq_len = canvas * canvas
    _JOB = _Job(tasks, count, tries_factor, seed, canvas)
    try:
        with _pool(workers) as pool, Progress(len(tasks), "arc build: augment", "tasks") as bar:
            versions = []
            for v in pool.imap(_augment_one, range(len(tasks)), chunksize=8):     # in task order, like map
                versions.append(v)
                bar.advance(1)
        sizes = np.array([len(v) for v in versions])
        evaluation = np.array([t.evaluation for t in tasks])
        ids_first = 1 + np.concatenate([[0], np.cumsum(sizes)[:-1]])     # id 0 is the blank id
        num_ids = 1 + int(sizes.sum())

        first_row, files = {}, {}
        for split in ("train", "test"):
            members = [i for i, t in enumerate(tasks) if split == "train" or t.evaluation]
            per_puzzle = {i: len(next(p for s, p, _ in _parts(tasks[i]) if s == split)) for i in members}
            rows_per_task = np.zeros(len(tasks), np.int64)
            for i in members:
                rows_per_task[i] = sizes[i] * per_puzzle[i]
            first_row[split] = np.concatenate([[0], np.cumsum(rows_per_task)[:-1]])
            split_dir = dest / split
            split_dir.mkdir(parents=True)
            total = int(rows_per_task.sum())
            for k in ("inputs", "labels"):
                files[f"{split}/{k}"] = Rows(array_path(split_dir, k), total, seq_len)
            puzzle_ids = np.concatenate([ids_first[i] + np.arange(sizes[i]) for i in members])
            examples = np.concatenate([np.full(sizes[i], per_puzzle[i]) for i in members])
            meta = Metadata(seq_len=seq_len, vocab_size=arc.VOCAB, pad_id=arc.PAD, ignore_label_id=arc.PAD,
                            blank_identifier_id=0, num_puzzle_identifiers=num_ids, total_groups=len(members),
                            mean_puzzle_examples=total / len(puzzle_ids), total_puzzles=len(puzzle_ids),
                            total_examples=total)
            write_index(split_dir, puzzle_ids, examples, sizes[members], meta)

        _JOB = _Job(tasks, count, tries_factor, seed, canvas, versions, files, first_row)
        with _pool(workers) as pool, Progress(len(tasks), "arc build: render", "tasks") as bar:
            for _ in pool.imap_unordered(_render_one, range(len(tasks)), chunksize=4):   # fixed offsets
                bar.advance(1)
    finally:
        _JOB = None

    _write_identifiers(dest, tasks, versions)
    test_sizes = sizes[evaluation]
    return ArcCounts(int(sizes.sum()), int(sum(s * len(_parts(t)[0][1]) for s, t in zip(sizes, tasks))),
                     int(test_sizes.sum()), int(sum(s * len(t.test) for s, t in zip(sizes, tasks) if t.evaluation)),
                     len(tasks), int((sizes < count + 1).sum()), int(sizes.min()))


def _write_identifiers(dest: Path, tasks: list[arc.Task], versions: list[arc.Versions]) -> None:
    """Names in the authors' style (task, or task_t{transform}_{colour map}) and the numeric table."""
    names = ["<blank>"]
    table = [np.concatenate([[0], np.arange(arc.COLORS)])[None].astype(np.uint8)]
    for task, v in zip(tasks, versions):
        names += [task.name if j == 0 else f"{task.name}_t{t}_{''.join(map(str, c))}"
                  for j, (t, c) in enumerate(zip(v.dihedral.tolist(), v.colors.tolist()))]
        table.append(np.concatenate([v.dihedral[:, None].astype(np.uint8), v.colors], axis=1))
    (dest / IDENTIFIERS).write_text(json.dumps(names))
    np.save(dest / AUGMENTATIONS, np.concatenate(table))
    answers = {t.name: [out.tolist() for _, out in t.test] for t in tasks if t.evaluation}
    inputs = {t.name: [inp.tolist() for inp, _ in t.test] for t in tasks if t.evaluation}
    (dest / "test" / "tasks.json").write_text(json.dumps({"inputs": inputs, "answers": answers}))


def counts_dict(c: ArcCounts) -> dict[str, int]:
    return asdict(c)
