"""Storage faults, on a real small file system where this machine lets the tests mount one (tmpfs; else
a short write faked where numpy writes): a full disk in the middle of a build, a read-only results folder,
and the temporary folders a killed process leaves behind."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from helpers import EXPERIMENT, SEED, setup_run

from hrm.cli import main
from hrm.core import paths
from hrm.core.atomic import sweep, write_text
from hrm.data.puzzles import layout

DATASET = "sudoku-demo"            # its build is ~420 KB: a 600 KB disk holds one build, not two


@contextmanager
def small_disk(where: Path, size_kb: int, read_only: bool = False) -> Iterator[bool]:
    """A tmpfs of `size_kb` mounted at `where`; yields False (and mounts nothing) where mounting is not allowed."""
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size_kb}k" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    try:
        yield done.returncode == 0
    finally:
        if done.returncode == 0:
            subprocess.run(["umount", "-l", str(where)], check=True)


def _one_error_line(err: str, verb: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith(f"hrm {verb}: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _short_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """What numpy raises when the disk fills during np.save: an OSError without errno, after a partial write."""
    real = np.save

    def save(path, array, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        real(path, array[: len(array) // 2], *args, **kwargs)
        raise OSError(f"{array.nbytes} requested and {array.nbytes // 2} written")

    monkeypatch.setattr(layout.np, "save", save)


def test_a_disk_that_fills_during_a_rebuild_keeps_the_old_build(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["download", DATASET]) == 0
    built = paths.built_dir(DATASET)
    with small_disk(built.parent, 600) as mounted:
        assert main(["build", DATASET]) == 0
        before = {p.relative_to(built): p.read_bytes() for p in built.rglob("*") if p.is_file()}
        if not mounted:
            _short_write(monkeypatch)
        capsys.readouterr()
        assert main(["build", DATASET]) == 4          # the new build does not fit beside the old one
        line = _one_error_line(capsys.readouterr().err, "build")
        assert "no space left on the device" in line and "run the same command again" in line
        assert {p.relative_to(built): p.read_bytes() for p in built.rglob("*") if p.is_file()} == before
        assert not list(built.parent.glob(".*.tmp"))


def test_a_read_only_results_folder_is_one_line(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup_run(project, epochs=1)
    results = project / "results"
    with small_disk(results, 4096) as mounted:
        if not mounted:
            pytest.skip("this machine does not allow mounting a tmpfs")
        assert main(["train", EXPERIMENT, "--seed", str(SEED)]) == 0
        subprocess.run(["mount", "-o", "remount,ro", str(results)], check=True)
        for argv in (["train", EXPERIMENT, "--seed", str(SEED)], ["evaluate", EXPERIMENT, "--seed", str(SEED)],
                     ["report", "demo"]):
            capsys.readouterr()
            assert main(argv) == 4, argv
            line = _one_error_line(capsys.readouterr().err, argv[0])
            assert "cannot write here (Read-only file system)" in line, line


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporary_folders_of_a_killed_process_are_swept_by_the_next_write(project: Path) -> None:
    dest = project / "data" / "built" / "x"
    dest.parent.mkdir(parents=True)
    dead, alive = _dead_pid(), os.getpid()
    for tag, pid in (("dir", dead), ("old", dead), ("file", dead), ("dir", alive)):
        (dest.parent / f".x.{tag}-{pid}.tmp").mkdir()
    # The folder had been moved aside and its replacement never arrived: the old one is put back.
    (dest.parent / f".x.old-{dead}.tmp" / "a.npy").write_text("complete")
    sweep(dest)
    assert (dest / "a.npy").read_text() == "complete"
    assert sorted(p.name for p in dest.parent.iterdir()) == [f".x.dir-{alive}.tmp", "x"]   # a live owner's stays
    (dest.parent / f".x.dir-{dead}.tmp").mkdir()
    write_text(dest.parent / "x" / "b.txt", "unrelated")         # another path: not swept
    assert (dest.parent / f".x.dir-{dead}.tmp").exists()


def test_a_build_killed_outright_leaves_nothing_the_next_build_keeps(project: Path) -> None:
    """SIGKILL in the middle of `hrm build` (no cleanup runs), then the same build."""
    assert main(["download", DATASET]) == 0 and main(["build", DATASET]) == 0
    built = paths.built_dir(DATASET)
    env = os.environ | {"PYTHONPATH": str(Path(paths.__file__).parents[1])}
    child = subprocess.Popen([sys.executable, "-c", "import os, signal, sys\n"
                              "from hrm.data.puzzles import layout\n"
                              "real = layout.write_index\n"
                              "def die(*a, **k):\n    real(*a, **k)\n    os.kill(os.getpid(), signal.SIGKILL)\n"
                              "layout.write_index = die\n"
                              f"from hrm.cli import main\nmain(['build', {DATASET!r}])"], env=env)
    assert child.wait() == -9
    left = list(built.parent.glob(".*.tmp"))
    assert left, "the kill should have left the half-written build behind"
    assert main(["build", DATASET]) == 0
    assert not list(built.parent.glob(".*.tmp"))


def test_a_damaged_latest_checkpoint_never_replaces_the_good_previous_one(tmp_path: Path) -> None:
    import torch

    from hrm.core import checkpoint

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "checkpoint.pt"
    checkpoint.save(path, checkpoint.RunState("h", epoch=1), model, opt)
    checkpoint.save(path, checkpoint.RunState("h", epoch=2), model, opt)
    path.write_bytes(path.read_bytes()[:100])                      # the latest damaged (a torn copy, a bad disk)
    checkpoint._WRITTEN.clear()                                    # as a new process finds it
    checkpoint.save(path, checkpoint.RunState("h", epoch=3), model, opt)
    assert checkpoint.read(checkpoint.previous(path))["state"]["epoch"] == 1    # not the damaged one
    assert checkpoint.read(path)["state"]["epoch"] == 3
    checkpoint.save(path, checkpoint.RunState("h", epoch=4), model, opt)       # intact: rotates as before
    assert checkpoint.read(checkpoint.previous(path))["state"]["epoch"] == 3


def test_an_evaluation_that_fails_half_way_leaves_its_outputs_all_old(project: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from hrm.evaluate import figures

    setup_run(project, epochs=1)
    assert main(["train", EXPERIMENT, "--seed", str(SEED)]) == 0 and main(["evaluate", EXPERIMENT, "--seed",
                                                                            str(SEED)]) == 0
    run = paths.run_dir("demo", EXPERIMENT, SEED)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003
        raise OSError(5, "Input/output error")       # a figure that cannot be drawn, after eval.json was written

    monkeypatch.setattr(figures, "confusion_matrix", broken)
    with pytest.raises(OSError):
        main(["evaluate", EXPERIMENT, "--seed", str(SEED)])
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"} == before
    assert not list(project.rglob("*.tmp"))
