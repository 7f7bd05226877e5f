"""`hrm bench build`: time the ARC build and report its peak memory (a benchmark, not a test).

The build runs into a temporary folder (data/built is left alone). Peak memory is reported per
process (ru_maxrss of the parent and the largest worker) and as their sum, an upper bound on the
whole tree's peak resident set, since the workers run concurrently.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from hrm.core import paths
from hrm.core.errors import DataError
from hrm.data.puzzles.build import build_arc_set
from hrm.data.puzzles.sources import PUZZLES


def bench_build(dataset: str = "arc1", workers: int | None = None, keep: Path | None = None) -> dict:
    spec = PUZZLES.get(dataset)
    if spec is None or spec.kind != "arc":
        arcs = ", ".join(n for n, p in PUZZLES.items() if p.kind == "arc")
        raise DataError(f"bench build: {dataset!r} is not an ARC data set ({arcs})")
    raw = paths.raw_dir(dataset)
    if not raw.is_dir():
        raise DataError(f"{raw}: missing; run `python -m hrm download {dataset}` first")
    root = Path(tempfile.mkdtemp(prefix="hrm-bench-", dir=keep or Path("data")))
    try:
        start = time.perf_counter()
        counts = build_arc_set(spec, raw, root, workers)
        wall = time.perf_counter() - start
        size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    parent = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20       # KiB -> GiB
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    n = workers or os.cpu_count() or 1
    return {"dataset": dataset, "augmentations": spec.augmentations, "workers": n, "wall_seconds": round(wall, 2),
            "peak_rss_gib": {"parent": round(parent, 3), "largest_worker": round(child, 3),
                             "upper_bound_all": round(parent + n * child, 3)},
            "output_gib": round(size / 2**30, 2), "counts": counts}


def main(dataset: str, workers: int | None) -> int:
    print(json.dumps(bench_build(dataset, workers), indent=1))
    return 0
