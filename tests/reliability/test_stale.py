"""No stale number under a fresh stamp: a model file, an evaluation and a report row each belong to the
params they were made with, and an evaluation never reads a run that another process is writing."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from helpers import EXPERIMENT, GROUP, SEED, setup_run

from hrm.cli import main
from hrm.core import paths
from hrm.core.locks import RunLock
from hrm.pipeline.config import load_params

RUN = ["--seed", str(SEED)]


def _change_lr(project: Path) -> tuple[str, str]:
    before = load_params().experiment(EXPERIMENT).params_hash()
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["recipes"]["tiny"]["lr"] *= 2
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return before, load_params().experiment(EXPERIMENT).params_hash()


def test_evaluate_refuses_a_model_trained_under_other_params(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup_run(project, epochs=1)
    assert main(["train", EXPERIMENT, *RUN]) == 0
    trained, now = _change_lr(project)
    model = paths.model_file(GROUP, EXPERIMENT, SEED)
    capsys.readouterr()
    assert main(["evaluate", EXPERIMENT, *RUN]) == 2
    err = capsys.readouterr().err.strip()
    assert f"trained with params {trained}, the params are now {now}" in err and len(err.splitlines()) == 1
    assert not paths.eval_file(GROUP, EXPERIMENT, SEED).exists()
    # A model file written before files carried their params: its run's metrics.json says.
    payload = torch.load(model, weights_only=True)
    del payload["params_hash"]
    torch.save(payload, model)
    assert main(["evaluate", EXPERIMENT, *RUN]) == 2
    assert f"trained with params {trained}" in capsys.readouterr().err
    # The report marks the run instead of calling it complete under the new params.
    assert main(["report", "demo"]) == 0
    rows = list(csv.DictReader(open(paths.table_files("demo")[1])))
    status = {r["status"] for r in rows if r["experiment"] == EXPERIMENT}
    assert status == {f"complete; stale: trained with params {trained}, now {now}"}, status


def test_evaluate_refuses_while_another_process_holds_the_run(project: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    setup_run(project, epochs=1)
    assert main(["train", EXPERIMENT, *RUN]) == 0
    with RunLock(paths.run_dir(GROUP, EXPERIMENT, SEED)):
        assert main(["evaluate", EXPERIMENT, *RUN]) == 2
    assert f"PID {os.getpid()}" in capsys.readouterr().err
    assert not paths.eval_file(GROUP, EXPERIMENT, SEED).exists()
    assert main(["evaluate", EXPERIMENT, *RUN]) == 0
    assert json.loads(paths.eval_file(GROUP, EXPERIMENT, SEED).read_text())["provenance"]["params_hash"] == \
        load_params().experiment(EXPERIMENT).params_hash()
