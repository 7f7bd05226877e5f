"""SIGKILL at random moments, then the same command: the run ends bitwise like an uninterrupted one."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import PUZZLE_EXPERIMENT, Training, clear_outputs, outcome, same, setup_puzzle_run, setup_run, train_cmd

pytestmark = pytest.mark.slow
KILL_POINTS = 6
PUZZLE_KILL_POINTS = 4


def kill_and_resume(project: Path, experiment: str, points: int, seed: int) -> tuple[int, list[str]]:
    """Run once uninterrupted, then `points` times killed at a random moment and rerun to the end:
    how many of the resumed runs ended exactly like the uninterrupted one, and where each was killed."""
    reference_run = Training(project, experiment)
    assert reference_run.finish() == 0
    reference = outcome(experiment)
    startup = reference_run.started_at - reference_run.spawned
    # From the first to the last batch, plus a little: kills land in training, evaluation and writing.
    train_span = 1.15 * (reference_run.last_batch_at - reference_run.started_at)

    rng = random.Random(seed)
    matched, killed_in = 0, []
    for k in range(points):
        clear_outputs(experiment)
        run = Training(project, experiment)
        if k < 2:                                    # during start-up, before any checkpoint
            time.sleep(rng.uniform(0.2, startup))
        else:                                        # anywhere in training, evaluation or output writing
            assert run.started.wait(60)
            time.sleep(rng.uniform(0, train_span))
        run.proc.send_signal(signal.SIGKILL)
        rc = run.finish()
        progress = [ln for ln in run.lines if "batches" in ln or " batch " in ln]
        killed_in.append("finished" if rc == 0 else (progress or ["start-up"])[-1].split("INFO ")[-1].strip())
        done = subprocess.run(train_cmd(experiment), cwd=project, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        matched += same(outcome(experiment), reference)
    return matched, killed_in


def _report(capsys: pytest.CaptureFixture[str], what: str, matched: int, killed_in: list[str]) -> None:
    with capsys.disabled():
        print(f"\nkill/resume ({what}): {matched}/{len(killed_in)} kill points matched the uninterrupted run; "
              "killed at:")
        for where in killed_in:
            print(f"  {where}")


def test_sigkill_at_random_points_then_resume_matches(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup_run(project, epochs=6, batch_size=32)
    matched, killed_in = kill_and_resume(project, "digits-tiny", KILL_POINTS, seed=2026)
    _report(capsys, "image CNN", matched, killed_in)
    assert matched == KILL_POINTS


def test_puzzle_run_killed_at_random_points_resumes_bitwise(project: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """ACT carry across batches, exploration draws, puzzle embeddings, Adam-atan2: all restored exactly."""
    setup_puzzle_run(project)
    matched, killed_in = kill_and_resume(project, PUZZLE_EXPERIMENT, PUZZLE_KILL_POINTS, seed=7)
    _report(capsys, "puzzle HRM with ACT", matched, killed_in)
    assert matched == PUZZLE_KILL_POINTS
