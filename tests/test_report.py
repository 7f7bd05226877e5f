"""The report a person reads: words from the numbers, one headline row per run, details, provenance."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
import yaml
from conftest import real_params, write_params

from hrm.cli import main
from hrm.core import paths
from hrm.pipeline.config import load_params

PROV = {"commit": "0123456789abcdef", "dirty": False, "date": "2026-12-01T00:00:00+00:00",
        "command": "python -m hrm train X --seed 0", "hardware": {"cpu": "test cpu"}}


def _hash(name: str) -> str:
    """The experiment's params hash now: a run that recorded another is reported stale."""
    return load_params().experiment(name).params_hash()


def _run(name: str, metrics: dict, evaluation: dict | None) -> None:
    paths.metrics_file("demo", name, 0).parent.mkdir(parents=True, exist_ok=True)
    prov = PROV | {"command": f"hrm {name}", "params_hash": _hash(name)}
    body = {"complete": True, "epochs": 5, "epochs_planned": 5, "provenance": prov,
            "train_acc": 0.5, "best_test_acc": 0.6, "params": 1000, "mean_seconds_per_epoch": 1.0,
            "total_seconds": 5.0} | metrics
    paths.metrics_file("demo", name, 0).write_text(json.dumps(body))
    if evaluation is not None:
        paths.eval_file("demo", name, 0).write_text(json.dumps(evaluation))


def _by_segments(values: dict[int, float], **extra: float) -> dict:
    return {str(m): {"exact_acc": v, "token_acc": 0.9, "headline": v, **extra} for m, v in values.items()}


def test_demo_report_says_what_the_runs_show(project: Path) -> None:
    write_params(project, real_params())
    _run("sudoku-demo-hrm", {"test_acc": 0.9}, {"test_acc": 0.92, "headline_name": "exact_acc",
                                                "trained_halt_max_steps": 4,
                                                "by_segments": _by_segments({1: 0.3, 4: 0.92, 8: 0.95})})
    _run("sudoku-demo-transformer", {"test_acc": 0.4}, {"test_acc": 0.4, "headline_name": "exact_acc",
                                                        "trained_halt_max_steps": 1,
                                                        "by_segments": _by_segments({1: 0.4})})
    _run("sudoku-demo-trm", {"test_acc": 0.9}, {"test_acc": 0.95, "headline_name": "exact_acc",
                                                "trained_halt_max_steps": 4, "by_segments": _by_segments({4: 0.95})})
    arc = _by_segments({4: 0.1}, **{"pass@1": 0.4, "pass@2": 0.6, "one_view_pass@1": 0.2, "partial_pass@2": 0.7})
    _run("arc-demo-hrm", {"test_acc": 0.1}, {"test_acc": 0.6, "headline_name": "pass@2",
                                             "trained_halt_max_steps": 4, "by_segments": arc})
    assert main(["report", "demo"]) == 0
    md_path, csv_path = paths.table_files("demo")
    md = md_path.read_text()
    assert ("* sudoku-demo, exact accuracy (%): sudoku-demo-hrm 92.00 vs sudoku-demo-transformer 40.00 vs "
            "sudoku-demo-trm 95.00." in md)                       # HRM, the direct baseline and TRM side by side
    assert "trained with M_max = 4, by segments at test time: 1: 30.0, 4: 92.0, 8: 95.0." in md
    assert "pass@1 20.0 from the one unaugmented view, 40.0 voted" in md
    assert "* maze-demo: not run yet." in md
    headline = md.split("## Headline")[1].split("## Detail")[0]
    rows = [line for line in headline.splitlines() if line.startswith("| ") and "seed" in line]
    assert len(rows) == sum(len(e["seeds"]) for e in real_params()["experiments"].values() if e["group"] == "demo")
    assert "| sudoku-demo-hrm seed 0 | sudoku-extreme-1k-hrm (paper 55.00) | exact accuracy (%) | — | 92.00 |" in md
    assert "| arc-demo-hrm seed 0 | arc1-hrm (paper 40.30) | pass@2, voted (%) | — | 60.00 |" in md
    assert "| maze-demo-hrm seed 0 | maze-hard-1k-hrm (paper 74.50) | test accuracy (%) | — | — | — | not run |" in md
    detail = md.split("## Detail")[1].split("## Provenance")[0]
    assert "pass@1, one view, no voting (%)" in detail and "token accuracy (%)" in detail
    assert "pass@2, voted, partial credit per test input (TRM's score) (%)" in detail
    assert f"| sudoku-demo-hrm seed 0 | test cpu | 0123456789 | {_hash('sudoku-demo-hrm')} |" in md
    long = list(csv.DictReader(open(csv_path)))
    one_view = next(r for r in long if r["experiment"] == "arc-demo-hrm" and r["metric"].startswith("pass@1, one"))
    assert float(one_view["reproduced"]) == 20.0 and one_view["commit"] == "0123456789"


def test_several_seeds_get_mean_sd_and_range_beside_the_paper(project: Path) -> None:
    raw = real_params()
    raw["experiments"]["digits-cnn"]["seeds"] = [0, 1, 2]
    write_params(project, raw)
    for seed, acc in ((0, 0.97), (1, 0.99), (2, 0.98)):
        path = paths.metrics_file("demo", "digits-cnn", seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"complete": True, "epochs": 1, "epochs_planned": 1, "provenance": PROV,
                                    "test_acc": acc}))
    assert main(["report", "demo"]) == 0
    md = paths.table_files("demo")[0].read_text()
    # mean 98, sample sd 1, range 97-99, all three runs complete; mnist-cnn has no paper number
    assert "| digits-cnn, 3 seeds | mnist-cnn | test accuracy (%) | — | 98.00 ± 1.00 (97.00–99.00, 3 seeds) | — | " \
           "3 of 3 complete |" in md
    assert "* digits, test accuracy (%): digits-cnn 98.00 ± 1.00 (97.00–99.00, 3 seeds) (not complete: digits-hrm" in md


def test_audit_page_places_every_paper_number(project: Path) -> None:
    from hrm.report.paper import PAPER

    write_params(project, real_params())
    path = paths.metrics_file("paper", "mnist-hrm", 42)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"complete": True, "epochs": 3, "epochs_planned": 3, "provenance": PROV,
                                "test_acc": 0.9748, "train_acc": 0.9832, "mean_seconds_per_epoch": 930.0}))
    assert main(["report", "paper"]) == 0
    page = paths.audit_file("paper").read_text()
    audit, beside = page.split("## Beside the paper")
    rows = [line for line in audit.splitlines() if line.startswith("| ") and not line.startswith("| experiment")]
    assert len(rows) == sum(len(numbers) for numbers in PAPER.values())        # one row per published number
    assert ("| mnist-hrm | test accuracy (%) | 98.02 | 97.48 | -0.54 | reproduced here (seed 42; commit 0123456789;"
            in page)
    assert "| mnist-hrm | seconds per epoch | 110.00 | 930.00 | — | not reproducible here: ours measured on" in page
    assert "| mnist-hrm | parameters | 1,053,056 | 1,053,056 | +0 | reproduced here" in page
    assert "| cifar10-hrm | test accuracy (%) | 65.04 | — | — | one command on a GPU (see below) |" in page
    assert "* **cifar10-hrm**: `dvc repro evaluate-cifar10-hrm-seed1234`" in page and "Not here: no GPU" in page
    assert "| mnist-cnn |" not in audit                             # not in the paper: no audit row
    assert "| mnist-cnn | faithful | — | mnist-hrm | — | not run yet |" in beside


def _paper_run(name: str, seed: int, test_acc: float, commit: str, history: list[tuple[float, float]] = ()) -> None:
    path = paths.metrics_file("paper", name, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"complete": True, "epochs": 3, "epochs_planned": 3, "test_acc": test_acc,
                                "provenance": PROV | {"commit": commit, "params_hash": _hash(name)}}))
    if history:
        rows = "".join(f"{i + 1},{lr},{acc}\n" for i, (lr, acc) in enumerate(history))
        paths.history_file("paper", name, seed).write_text("epoch,lr,test_acc\n" + rows)


def test_audit_places_the_paper_against_our_seeds_and_sets_other_modes_beside(project: Path) -> None:
    write_params(project, real_params())
    frozen = [(2.5e-4, 0.969), (0.0, 0.9748), (0.0, 0.9748)]
    for seed, acc, commit in ((42, 0.9748, "aaaaaaaaaaaa"), (43, 0.9760, "bbbbbbbbbbbb"), (44, 0.9790, "bbbbbbbbbbbb")):
        _paper_run("mnist-hrm", seed, acc, commit, frozen)
    _paper_run("mnist-hrm-corrected", 42, 0.9820, "cccccccccccc", [(8e-4, 0.97), (3e-4, 0.98), (1e-5, 0.982)])
    assert main(["report", "paper"]) == 0
    page = paths.audit_file("paper").read_text()
    # mean 97.66, sd 0.22, range 97.48-97.90: the paper's 98.02 lies outside; every seed and distinct commit is named
    assert ("| mnist-hrm | test accuracy (%) | 98.02 | 97.66 ± 0.22 (97.48–97.90, 3 seeds) | -0.36 | reproduced here "
            "(seeds 42, 43, 44; commits aaaaaaaaaa, bbbbbbbbbb; test cpu; paper outside our range) |") in page
    assert ("| mnist-hrm-corrected | corrected | 98.20 | mnist-hrm (faithful): 97.66 ± 0.22 (97.48–97.90, 3 seeds) | "
            "+0.54 | run here (seed 42; commit cccccccccc; test cpu) |") in page
    md = paths.table_files("paper")[0].read_text()
    assert ("  * mnist-hrm seed 43: the learning rate is 0 by the end of epoch 2 of 3 (faithful mode: the schedule "
            "counts batches, the HRM updates twice per batch; REFERENCE I.5.1), so the weights stop changing; test "
            "accuracy by epoch: 96.90, 97.48, 97.48.") in md
    assert "mnist-hrm-corrected seed 42: the learning rate is 0" not in md      # its rate stays above 0
    # The paper's participation ratio, and where ours would come from; an ablation set beside its anchor.
    assert "Participation ratio, paper (27M Sudoku HRM, D = 512): z_H 89.95, z_L 30.22, ratio 2.98. " \
           "Measured here: none yet." in page
    assert "`dvc repro analyze-pr-sudoku-extreme-1k-hrm-seed0`" in page
    assert "| cifar10-cnn-crop-flip | faithful | — | cifar10-cnn | — | not run yet |" in page
    assert "| arc1-aug300-hrm | — | — | arc1-hrm | — | not run yet |" in page
    analyses = paths.table_files("paper", "analyses")[0].read_text()
    assert "| sudoku-extreme-1k-hrm-mmax1 seed 0 | hrm-puzzle | 1 | test accuracy (%) | — | not run |" in analyses


def test_a_run_marked_stale_is_labelled_until_it_is_retrained(project: Path, capsys: pytest.CaptureFixture) -> None:
    """`hrm relock --stale`: the audit page and the table say which committed runs the code here would compute
    differently; the mark lapses once dvc.lock keys the run on the fingerprint the code computes now."""
    write_params(project, real_params())
    for seed in (42, 43, 44):
        _paper_run("mnist-hrm", seed, 0.975, "aaaaaaaaaaaa")
    fingerprint = paths.fingerprint_file("paper", "mnist-hrm", 42)
    fingerprint.write_text('{"computed": "now"}\n')
    trained_on, now = hashlib.md5(b"then").hexdigest(), hashlib.md5(fingerprint.read_bytes()).hexdigest()

    def lock(keyed: str) -> None:
        stage = {"cmd": "python -m hrm train mnist-hrm --seed 42", "deps": [{"path": str(fingerprint), "md5": keyed}]}
        Path("dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"train-mnist-hrm-seed42": stage}}))

    lock(trained_on)
    paths.stale_file("paper").write_text(json.dumps({"train-mnist-hrm-seed42": {
        "reason": "the RMSNorm fix", "fingerprint_file": str(fingerprint), "keyed_on": trained_on, "marked": "2026"}}))
    assert main(["report", "paper"]) == 0
    page = paths.audit_file("paper").read_text()
    (row,) = [ln for ln in page.splitlines() if ln.startswith("| mnist-hrm | test accuracy (%) | 98.02 |")]
    assert row.endswith("); STALE: seed 42: computed by older code (the RMSNorm fix); retrain: "
                        "`dvc repro train-mnist-hrm-seed42` |"), row
    assert "complete; stale: computed by older code (the RMSNorm fix)" in paths.table_files("paper")[1].read_text()
    lock(now)                                                        # retrained (or relocked): the mark lapses
    assert main(["report", "paper"]) == 0
    assert "STALE" not in paths.audit_file("paper").read_text()
    paths.stale_file("paper").write_text("{not json")
    capsys.readouterr()
    assert main(["report", "paper"]) == 2
    assert "results/stale.json: not a stale-marks file" in capsys.readouterr().err
