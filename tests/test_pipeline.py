"""Smoke runs of the whole DAG on tiny params: Snakemake, then DVC, in a scratch project."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, tiny_params, write_params

from hrm.cli import main
from hrm.core import paths

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _scratch(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    for name in ("Snakefile", "workflow", "profiles", ".dvc", ".dvcignore"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    shutil.rmtree(root / ".dvc" / "tmp", ignore_errors=True)
    shutil.rmtree(root / ".dvc" / "cache", ignore_errors=True)
    # A copy of the code (first on PYTHONPATH in `_run`), so the test can edit a file of it.
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    write_params(root, tiny_params(
        **{"digits-tiny": {"group": "demo", "dataset": "digits", "model": "tiny", "recipe": "tiny", "seeds": [0],
                           "mode": "faithful"},
           "digits-paper": {"group": "paper", "dataset": "digits", "model": "tiny", "recipe": "tiny",
                            "seeds": [3], "mode": "faithful"}}))
    return root


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "PYTHONPATH": str(cwd / "src")}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def test_snakemake_then_dvc_run_the_whole_dag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _scratch(tmp_path)
    monkeypatch.chdir(root)
    assert main(["dvc-yaml"]) == 0
    from hrm.pipeline import stages
    from hrm.pipeline.config import load_params

    expected = stages.outputs(stages.stage_table(load_params()))

    _run([str(BIN / "snakemake"), "--cores", "2", "all"], root)
    missing = [o for o in expected if not (root / o).exists()]
    assert not missing
    table = (root / paths.table_files("paper")[0]).read_text()
    assert "digits-paper" in table and "complete" in table
    assert "digits-tiny" in (root / paths.table_files("demo")[0]).read_text()
    assert (root / "results/demo/runs/digits-tiny/seed0/train.log").exists()   # Snakemake job logs

    # Snakemake's own HTML report: every flagged table and figure, by study and experiment, captioned.
    _run([str(BIN / "snakemake"), "--report", "report.html", "all"], root)
    html = (root / "report.html").read_text()
    for text in ("Study I: image classification", "Tables", "digits-tiny", "digits-paper", "summary.csv",
                 "README.md", "confusion matrix of digits-paper", *(f"{f}.png" for f in paths.FIGURES)):
        assert text in html, text

    # A refactor in the trainer (a local variable renamed): Snakemake reruns the fingerprint checkpoints, finds
    # them unchanged and trains nothing.
    fingerprint, metrics = (root / f(*PAPER_RUN) for f in (paths.fingerprint_file, paths.metrics_file))
    trained, probed = metrics.stat().st_mtime_ns, fingerprint.stat().st_mtime_ns
    trainer = root / "src/hrm/train/image.py"
    time.sleep(1.1)
    trainer.write_text(trainer.read_text().replace("bad = ", "nonfinite = ").replace("if len(bad)", "if len(nonfinite)")
                       .replace("int(bad[0])", "int(nonfinite[0])"))
    _run([str(BIN / "snakemake"), "--cores", "2", "all"], root)
    assert fingerprint.stat().st_mtime_ns > probed and metrics.stat().st_mtime_ns == trained

    # Editing a file only evaluation uses plans evaluations and reports, no build or training.
    _edit(root / EVAL_ONLY)
    assert _snakemake_rules(root) == {"evaluate", "report", "all"}

    # The same DAG through DVC, from scratch; a second repro is a no-op.
    for p in ("data", "results", "logs"):
        shutil.rmtree(root / p, ignore_errors=True)
    _run(["git", "init", "-q"], root)
    _run([str(BIN / "dvc"), "repro"], root)
    assert not [o for o in expected if not (root / o).exists()]
    metrics = json.loads((root / paths.metrics_file("paper", "digits-paper", 3)).read_text())
    assert metrics["complete"] and metrics["provenance"]["command"] == "python -m hrm train digits-paper --seed 3"
    again = _run([str(BIN / "dvc"), "repro"], root)
    assert "Data and pipelines are up to date" in again.stdout + again.stderr

    # Again through DVC: only evaluation stages changed, and repro runs evaluations and reports only.
    _edit(root / EVAL_ONLY)
    status = _run([str(BIN / "dvc"), "status"], root).stdout
    changed = {ln.rstrip(":") for ln in status.splitlines() if ln.endswith(":") and not ln[:1].isspace()}
    assert changed and all(c.startswith("evaluate-") for c in changed), status
    ran = re.findall(r"Running stage '([^']+)'", _run([str(BIN / "dvc"), "repro"], root).stdout)
    assert ran and {r.split("-")[0] for r in ran} <= {"evaluate", "report"}, ran
    _dvc_everyday(root)


def _dvc_everyday(root: Path) -> None:
    """DVC's own tools on this layout: plots, an experiment with -S, metrics and params diffs."""
    dvc = str(BIN / "dvc")
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"]
    _run([*git, "add", "-A"], root)
    _run([*git, "commit", "-qm", "baseline"], root)
    _fingerprints(root)
    _shared_cache(root, git)

    plots = json.loads(_run([dvc, "plots", "show", "--json"], root).stdout)["data"]
    assert {"digits-tiny: confusion", "digits-paper: training loss"} <= set(plots)
    curve = plots["digits-tiny: accuracy"][0]
    assert curve["type"] == "vega" and {"train_acc", "test_acc"} <= set(json.dumps(curve["content"]).split('"'))
    _run([dvc, "plots", "show", "-o", "plots"], root)
    assert "digits-paper: training loss" in (root / "plots" / "index.html").read_text()

    before = json.loads((root / paths.metrics_file("demo", "digits-tiny", 0)).read_text())["test_acc"]
    _run([dvc, "exp", "run", "-S", "recipes.tiny.lr=0.02", "-n", "lr-high"], root)
    after = json.loads((root / paths.metrics_file("demo", "digits-tiny", 0)).read_text())["test_acc"]
    params = json.loads(_run([dvc, "params", "diff", "--json"], root).stdout)
    lr = params["params.yaml"]["recipes.tiny.lr"]
    assert (lr["old"], lr["new"]) == (0.003, 0.02)
    diff = json.loads(_run([dvc, "metrics", "diff", "--json"], root).stdout)
    changed = diff[str(paths.metrics_file("demo", "digits-tiny", 0))]["test_acc"]
    assert changed["old"] == before and changed["new"] == after != before
    shown = _run([dvc, "exp", "show", "--csv", "--only-changed"], root).stdout
    assert "lr-high" in shown and "0.02" in shown
    overlay = json.loads(_run([dvc, "plots", "diff", "HEAD", "--json"], root).stdout)["data"]
    assert set(overlay["digits-tiny: accuracy"][0]["revisions"]) == {"HEAD", "workspace"}   # both curves drawn


def _shared_cache(root: Path, git: list[str]) -> None:
    """A team's shared cache (README, "A shared cache"): a DVC remote (here a local folder) that one
    member pushes to; a fresh clone pulls every output and `dvc repro` has nothing to do."""
    dvc, remote, clone = str(BIN / "dvc"), root.parent / "remote", root.parent / "clone"
    _run([dvc, "remote", "add", "-d", "shared", str(remote)], root)
    _run([*git, "commit", "-qam", "shared cache"], root)
    _run([dvc, "push"], root)
    _run(["git", "clone", "-q", str(root), str(clone)], root.parent)
    model = paths.model_file("paper", "digits-paper", 3)
    assert not (clone / model).exists()
    _run([dvc, "pull"], clone)
    assert (clone / model).read_bytes() == (root / model).read_bytes()
    status = _run([dvc, "status"], clone)
    assert "Data and pipelines are up to date" in status.stdout + status.stderr, status.stdout
    again = _run([dvc, "repro"], clone)
    assert "Data and pipelines are up to date" in again.stdout + again.stderr
    assert not re.findall(r"Running stage", again.stdout)


EVAL_ONLY = "src/hrm/evaluate/figures.py"
REFACTOR = "src/hrm/core/progress.py"             # imported by training; changes no number
PAPER_RUN = ("paper", "digits-paper", 3)
TRAIN = "train-digits-paper-seed3"
FINGERPRINT = "fingerprint-digits-paper-seed3"


def _changed(root: Path) -> dict[str, object]:
    return json.loads(_run([str(BIN / "dvc"), "status", "--json"], root).stdout or "{}")


def _fingerprints(root: Path) -> None:
    """Training is keyed by what it computes (issue 29): (a) a refactor reruns the fingerprints only; (b) a
    learning-rate formula moves the fingerprint and plans the training, and relock refuses to keep the run;
    (c) a change of the probe itself, with the model not here, is relocked after a replay."""
    dvc, hrm = str(BIN / "dvc"), [sys.executable, "-m", "hrm"]
    _edit(root / REFACTOR)
    ran = re.findall(r"Running stage '([^']+)'", _run([dvc, "repro"], root).stdout)
    assert FINGERPRINT in ran and not [r for r in ran if r.startswith("train-")], ran
    assert _changed(root) == {}

    optim = root / "src/hrm/models/optim.py"
    original = optim.read_text()
    optim.write_text(original.replace("return peak * step / warmup", "return peak * (step + 1) / warmup"))
    _run([dvc, "repro", "--single-item", FINGERPRINT], root)
    fingerprint = str(paths.fingerprint_file(*PAPER_RUN))
    assert _changed(root)[TRAIN] == [{"changed deps": {fingerprint: "modified"}}]
    assert f"{TRAIN}: changed: computation (fingerprint modified)" in _run([*hrm, "status"], root).stdout
    lock = (root / "dvc.lock").read_text()
    refused = subprocess.run([*hrm, "relock", "digits-paper", "--seed", "3"], cwd=root, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(root / "src")})
    assert refused.returncode == 1 and "refused: the computation behind the committed run changed" in refused.stdout
    assert (root / "dvc.lock").read_text() == lock
    # Or keep the committed number, labelled: the training still shows as changed, the mark says why.
    marked = _run([*hrm, "relock", "digits-paper", "--seed", "3", "--stale", "the warmup fix"], root).stdout
    assert "marked stale in results/stale.json" in marked
    assert json.loads((root / "results/stale.json").read_text())[TRAIN]["reason"] == "the warmup fix"
    assert _changed(root)[TRAIN] == [{"changed deps": {fingerprint: "modified"}}] and FINGERPRINT not in _changed(root)
    (root / "results/stale.json").unlink()
    optim.write_text(original)
    _run([dvc, "repro", "--single-item", FINGERPRINT], root)
    assert _changed(root) == {}

    (root / paths.model_file(*PAPER_RUN)).unlink()
    probe = root / "src/hrm/train/fingerprint.py"
    probe.write_text(probe.read_text().replace("PROBE_ROWS = 8 ", "PROBE_ROWS = 4 "))
    _run([dvc, "repro", "--single-item", FINGERPRINT], root)
    assert _changed(root)[TRAIN][0] == {"changed deps": {fingerprint: "modified"}}
    relocked = _run([*hrm, "relock", "digits-paper", "--seed", "3"], root).stdout
    assert "recorded with another probe" in relocked and "identical" in relocked and "recorded:" in relocked
    model = str(paths.model_file(*PAPER_RUN))
    assert _changed(root)[TRAIN] == [{"changed outs": {model: "deleted"}}]
    assert f"{TRAIN}: not here (dvc pull, or rebuild/retrain): {model}" in _run([*hrm, "status"], root).stdout
    _run(["git", "checkout", "--", "."], root)          # back to the committed probe, fingerprints and lock
    _run([dvc, "checkout", TRAIN], root)
    assert _changed(root) == {}


def _edit(path: Path) -> None:
    """A change a researcher might make: a comment appended (new content and a new mtime)."""
    time.sleep(1.1)                       # coarse file-system clocks: make the new mtime visibly newer
    with open(path, "a") as fh:
        fh.write("# edited by the dependency test\n")


def _snakemake_rules(root: Path) -> set[str]:
    """Rules of the jobs `snakemake -n all` would run now."""
    out = _run([str(BIN / "snakemake"), "-n", "all"], root).stdout
    stats = out.split("Job stats:", 1)[1].split("total", 1)[0]
    rows = [ln.split() for ln in stats.splitlines()]
    return {r[0] for r in rows if len(r) == 2 and r[1].isdigit()}
