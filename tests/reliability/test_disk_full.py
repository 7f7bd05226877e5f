"""A full disk at any write of any stage: one line naming the path, exit 4, nothing half-written,
and the same command finishes once space is back."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
from helpers import setup_run

from hrm.cli import main
from hrm.pipeline import stages
from hrm.pipeline.config import load_params


class FullDisk:
    """Makes the k-th write that lands (the rename of a finished temporary file) fail with ENOSPC,
    as the last write of that file would on a full disk; counts the writes when k is 0."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, k: int) -> None:
        self.k, self.count, self.real = k, 0, os.replace
        monkeypatch.setattr(os, "replace", self)

    def __call__(self, src: str | os.PathLike, dst: str | os.PathLike) -> None:
        if str(src).endswith(".tmp"):
            self.count += 1
            if self.count == self.k:
                raise OSError(errno.ENOSPC, "No space left on device", str(src))
        self.real(src, dst)


def _clear(stage: stages.Stage) -> None:
    for out in stage.outs + stage.outs_no_cache:
        p = Path(out)
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def test_every_write_of_every_stage_fails_cleanly_and_the_rerun_recovers(
        project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    setup_run(project, epochs=2, batch_size=256)
    table = [s for s in stages.stage_table(load_params()) if "digits" in s.name or s.name == "report-demo"]
    assert [s.verb for s in table] == ["download", "build", "fingerprint", "train", "evaluate", "report"]
    checked = 0
    for stage in table:
        argv = stage.cmd.split()[3:]                          # "python -m hrm VERB ARGS"
        with pytest.MonkeyPatch.context() as mp:
            counter = FullDisk(mp, 0)
            assert main(argv) == 0
        writes = counter.count
        assert writes >= 1, stage.name
        for k in range(1, writes + 1):
            _clear(stage)
            capsys.readouterr()
            with pytest.MonkeyPatch.context() as mp:
                FullDisk(mp, k)
                assert main(argv) == 4, f"{stage.name}: write {k}/{writes}"
            err = capsys.readouterr().err
            errors = [ln for ln in err.splitlines() if ln.startswith(f"hrm {argv[0]}: error:")]
            assert len(errors) == 1 and "Traceback" not in err, err
            assert "no space left on the device" in errors[0] and "run the same command again" in errors[0]
            assert not list(project.rglob("*.tmp")), f"{stage.name}: a temporary file was left at write {k}"
            assert main(argv) == 0, f"{stage.name}: the rerun after write {k} failed"
            checked += 1
    assert checked >= 10
