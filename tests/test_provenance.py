"""Provenance names the code a command started with, not what was committed while it ran."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hrm.core import provenance


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def _init(repo: Path) -> None:
    _git(repo, "init", "-q")
    for key, value in {"user.email": "t@t", "user.name": "t", "commit.gpgsign": "false"}.items():
        _git(repo, "config", key, value)


def test_commit_is_taken_when_the_command_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _init(tmp_path)
    (tmp_path / "a.txt").write_text("1")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "commit", "-qm", "first")
    first = _git(tmp_path, "rev-parse", "HEAD")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(provenance, "_START_COMMIT", None)

    provenance.set_command(["train", "x", "--seed", "1"])
    (tmp_path / "a.txt").write_text("2")                     # work goes on while the run trains
    _git(tmp_path, "commit", "-qam", "second")
    assert provenance.git_commit()["commit"] != first

    record = provenance.record("hash")
    assert record["commit"] == first and record["dirty"] is False
    assert record["command"] == "python -m hrm train x --seed 1"


def test_only_code_and_params_make_a_tree_dirty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _init(tmp_path)
    (tmp_path / "results").mkdir()
    for name in ("dvc.lock", "results/summary.md", "params.yaml"):
        (tmp_path / name).write_text("1")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "first")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.lock").write_text("2")            # what `dvc repro` writes between two stages
    (tmp_path / "results/summary.md").write_text("2")
    assert provenance.git_commit()["dirty"] is False
    (tmp_path / "params.yaml").write_text("2")
    assert provenance.git_commit()["dirty"] is True
