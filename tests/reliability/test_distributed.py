"""Data-parallel training on the CPU (gloo): two processes train what one trains, from the same global
batches; a stop signal and a killed rank leave a run that the same command resumes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import write_params
from helpers import GROUP, PUZZLE_EXPERIMENT, SEED, Training, setup_puzzle_run, setup_run, train_cmd

from hrm.cli import main
from hrm.core import paths

pytestmark = pytest.mark.slow
IMAGE = "digits-tiny"


def edit_params(project: Path, edit: Callable[[dict[str, Any]], object]) -> None:
    raw = yaml.safe_load((project / "params.yaml").read_text())
    edit(raw)
    write_params(project, raw)


def set_processes(project: Path, n: int) -> None:
    edit_params(project, lambda raw: raw["runtime"].update(processes=n))


def result(experiment: str) -> dict[str, Any]:
    run = paths.run_dir(GROUP, experiment, SEED)
    history = list(csv.DictReader(open(run / "history.csv")))
    return {"weights": torch.load(run / "model.pt", weights_only=True)["state_dict"],
            "losses": [float(r["loss"]) for r in csv.DictReader(open(run / "steps.csv"))],
            "test_acc": [float(r["test_acc"]) for r in history],
            "metrics": json.loads((run / "metrics.json").read_text())}


def assert_same_training(a: dict[str, Any], b: dict[str, Any], test_examples: int) -> None:
    """Within float tolerance: the ranks sum the gradients in another order than one process does."""
    assert len(a["losses"]) == len(b["losses"]) > 0
    assert max(abs(x - y) for x, y in zip(a["losses"], b["losses"])) <= 1e-5
    assert a["weights"].keys() == b["weights"].keys()
    for name, w in a["weights"].items():
        torch.testing.assert_close(b["weights"][name].float(), w.float(), rtol=1e-4, atol=1e-5, msg=name)
    assert all(abs(x - y) <= 1 / test_examples for x, y in zip(a["test_acc"], b["test_acc"]))
    assert a["metrics"]["optimizer_steps"] == b["metrics"]["optimizer_steps"]


def one_then_two(project: Path, experiment: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run with one process (in this one), then through `hrm train` with runtime.processes 2 (torchrun)."""
    assert main(["train", experiment, "--seed", str(SEED)]) == 0
    one = result(experiment)
    set_processes(project, 2)
    done = subprocess.run(train_cmd(experiment), cwd=project, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--nproc-per-node=2" in done.stderr            # the train command launched torchrun itself
    two = result(experiment)
    assert two["metrics"]["processes"] == 2 and "processes" not in one["metrics"]
    return one, two


def test_two_processes_train_what_one_does_image(project: Path) -> None:
    """The CNN: each rank's rows of every batch, BatchNorm statistics over the global batch, summed gradients."""
    setup_run(project, epochs=2, batch_size=64)
    one, two = one_then_two(project, IMAGE)
    assert_same_training(one, two, 359)


def test_two_processes_train_what_one_does_puzzle(project: Path) -> None:
    """The puzzle HRM with ACT: each rank's rows of the carry, exploration draws of the global batch,
    sign-SGD on the puzzle-embedding rows gathered from both ranks (the table is in the weights)."""
    setup_puzzle_run(project)
    edit_params(project, lambda raw: raw["recipes"]["maze-tiny"].update(epochs=2))   # 4 updates, 2 evaluations
    one, two = one_then_two(project, PUZZLE_EXPERIMENT)
    assert any("puzzle" in name for name in one["weights"])
    assert_same_training(one, two, 200)


def rank_pids(launcher: int) -> dict[int, int]:
    """{rank: pid} of the torchrun workers below the `hrm train` process `launcher`."""
    parents, ranks = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = dict(kv.split("=", 1) for kv in (entry / "environ").read_text().split("\0") if "=" in kv)
        except (OSError, ValueError, IndexError):
            continue
        if "TORCHELASTIC_RUN_ID" in env and "RANK" in env:
            ranks[int(entry.name)] = int(env["RANK"])

    def below(pid: int) -> bool:
        while pid in parents and pid > 1:
            pid = parents[pid]
            if pid == launcher:
                return True
        return False

    return {rank: pid for pid, rank in ranks.items() if below(pid)}


def start_two(project: Path) -> tuple[Training, dict[str, Any]]:
    """A 2-process CNN run of 3 epochs, started and past its first checkpoint; and the same run's
    outcome with one process, uninterrupted (the reference)."""
    setup_run(project, epochs=3, batch_size=64)
    assert main(["train", IMAGE, "--seed", str(SEED)]) == 0
    reference = result(IMAGE)
    for f in paths.run_dir(GROUP, IMAGE, SEED).glob("*.*"):
        f.unlink()
    set_processes(project, 2)
    run = Training(project, IMAGE)
    deadline = time.monotonic() + 120
    while not any("epoch 1/3: train loss" in ln for ln in run.lines):     # epoch 1 checkpointed
        assert run.proc.poll() is None and time.monotonic() < deadline, "".join(run.lines)[-3000:]
        time.sleep(0.05)
    return run, reference


def resume_and_compare(project: Path, reference: dict[str, Any]) -> None:
    assert not paths.metrics_file(GROUP, IMAGE, SEED).exists()      # nothing final written by a cut run
    assert paths.checkpoint_file(GROUP, IMAGE, SEED).exists()
    done = subprocess.run(train_cmd(IMAGE), cwd=project, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = result(IMAGE)
    assert resumed["metrics"]["resumed_from"] and resumed["metrics"]["resumed_from"][0][0] >= 1
    assert_same_training(reference, resumed, 359)


def test_sigterm_stops_every_rank_at_one_batch_and_the_rerun_resumes(project: Path) -> None:
    run, reference = start_two(project)
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish(timeout=120) == 128 + signal.SIGTERM
    text = "".join(run.lines)
    assert "stopped by SIGTERM" in text and "checkpoint saved" in text
    resume_and_compare(project, reference)


def test_a_killed_rank_stops_the_run_and_the_rerun_resumes(project: Path) -> None:
    """SIGKILL to rank 1: rank 0 fails in its next collective, torchrun ends the launch, the launcher
    exits with an error, the lock is free and the last checkpoint is intact."""
    run, reference = start_two(project)
    pids = rank_pids(run.proc.pid)
    assert set(pids) == {0, 1}, pids
    os.kill(pids[1], signal.SIGKILL)
    t0 = time.monotonic()
    rc = run.finish(timeout=120)
    assert rc != 0 and time.monotonic() - t0 < 60
    text = "".join(run.lines)
    assert "a rank failed" in text and "rank 0 of 2: a collective failed" in text
    resume_and_compare(project, reference)


def test_a_run_folder_in_use_is_refused_by_every_rank(project: Path) -> None:
    """Rank 0 takes the run lock for all; when another process holds it, every rank refuses, nothing starts."""
    from hrm.core.locks import RunLock

    setup_run(project, epochs=1, batch_size=64)
    set_processes(project, 2)
    with RunLock(paths.run_dir(GROUP, IMAGE, SEED)):
        done = subprocess.run(train_cmd(IMAGE), cwd=project, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert f"in use by another run (PID {os.getpid()})" in done.stderr
    assert "rank 0 could not lock the run folder" in done.stderr               # rank 1's own line
    assert not paths.checkpoint_file(GROUP, IMAGE, SEED).exists()
