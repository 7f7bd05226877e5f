"""SIGKILL at random moments, then the same command: the run ends bitwise like an uninterrupted one."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import Training, clear_outputs, outcome, same, setup_run, train_cmd

pytestmark = pytest.mark.slow
KILL_POINTS = 12


def test_sigkill_at_random_points_then_resume_matches(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup_run(project, epochs=6, batch_size=32)
    reference_run = Training(project)
    assert reference_run.finish() == 0
    reference = outcome()
    startup = reference_run.started_at - reference_run.spawned
    # From the first to the last batch, plus a little: kills land in training, evaluation and writing.
    train_span = 1.15 * (reference_run.last_batch_at - reference_run.started_at)

    rng = random.Random(2026)
    matched, killed_in = 0, []
    for k in range(KILL_POINTS):
        clear_outputs()
        run = Training(project)
        if k < 2:                                    # during start-up, before any checkpoint
            time.sleep(rng.uniform(0.2, startup))
        else:                                        # anywhere in training, evaluation or output writing
            assert run.started.wait(60)
            time.sleep(rng.uniform(0, train_span))
        run.proc.send_signal(signal.SIGKILL)
        rc = run.finish()
        killed_in.append("finished" if rc == 0 else ([ln for ln in run.lines if "batches" in ln] or ["start-up"])[-1]
                         .split("INFO ")[-1].strip())
        done = subprocess.run(train_cmd(), cwd=project, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        matched += same(outcome(), reference)
    with capsys.disabled():
        print(f"\nkill/resume: {matched}/{KILL_POINTS} kill points matched the uninterrupted run; killed at:")
        for where in killed_in:
            print(f"  {where}")
    assert matched == KILL_POINTS
