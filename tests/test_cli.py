"""The CLI surface: describe, check, help."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from hrm.cli import main


def test_describe_reports_config_data_outputs_and_exact_params(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(REPO)
    assert main(["describe", "cifar100-cnn"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 273_344
    assert info["dataset"]["name"] == "cifar100" and info["dataset"]["classes"] == 100
    assert info["config"]["recipe"]["lr"] == pytest.approx(3e-4)
    assert info["outputs"]["2026"]["model"] == "results/runs/cifar100-cnn/seed2026/model.pt"


def test_check_ok_and_module_entry_point() -> None:
    out = subprocess.run([sys.executable, "-m", "hrm", "check"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0 and "OK" in out.stdout


def test_describe_does_not_import_torch() -> None:
    # `hrm describe` must stay fast: torch alone takes seconds to import.
    code = ("import sys; from hrm.cli import main; main(['describe', 'cifar10-cnn']); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_bad_seed_and_missing_model(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "digits-tiny", "--seed", "-1"]) == 2
    assert "--seed" in capsys.readouterr().err
    assert main(["evaluate", "digits-tiny", "--seed", "0"]) == 2
    assert "data/built/digits" in capsys.readouterr().err
    assert main(["download", "digits"]) == 0 and main(["build", "digits"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "digits-tiny", "--seed", "0"]) == 2
    err = capsys.readouterr().err
    assert "model.pt: no trained model" in err and "hrm train digits-tiny --seed 0" in err


def test_under_dvc_a_stage_writes_the_log_its_snakemake_rule_writes(
        project: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """DVC keeps no log of a stage's output; $DVC_STAGE (set by DVC for every stage command) makes `hrm`
    write it to the same file the Snakemake rule redirects into, error line included."""
    from hrm.pipeline import stages
    from hrm.pipeline.config import load_params

    caplog.set_level(logging.INFO)                                # as the command line sets it
    assert main(["download", "digits"]) == 0
    assert not Path("logs").exists()                               # a plain run writes no log file
    monkeypatch.setenv("DVC_STAGE", "build-digits")
    assert main(["build", "digits"]) == 0
    table = {s.name: s for s in stages.stage_table(load_params())}
    log = Path(table["build-digits"].log)
    assert log == Path("logs/build/digits.log") and "digits" in log.read_text()
    monkeypatch.setenv("DVC_STAGE", "evaluate-digits-tiny-seed0")
    assert main(["evaluate", "digits-tiny", "--seed", "0"]) == 2
    text = Path(table["evaluate-digits-tiny-seed0"].log).read_text()
    assert "hrm evaluate: error:" in text and "no trained model" in text
