"""One progress style: a rich bar on a terminal; otherwise a plain line every N seconds, never a redraw."""

from __future__ import annotations

import logging

import pytest

from hrm.core import progress
from hrm.core.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_piped_output_is_a_line_every_n_seconds_with_rate_and_eta(caplog: pytest.LogCaptureFixture,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "EVERY_SECONDS", 30.0)
    clock = Clock()
    caplog.set_level(logging.INFO, logger="hrm")
    with Progress(100, "train x", "batches", tty=False, clock=clock) as bar:
        bar.skip(20)                                 # resumed: done before this process, not in the rate
        for i in range(80):
            clock.now += 1.0                         # one batch per second
            bar.advance(1, "loss 0.5" if i == 40 else "")
    lines = [r.getMessage() for r in caplog.records]
    # at 30 s and 60 s, then the last batch (80 s): never one per batch
    assert len(lines) == 3
    assert lines[0] == "train x: 50/100 batches (50%), 1 batches/s, ETA 0:50"
    assert lines[1] == "train x: 80/100 batches (80%), 1 batches/s, ETA 0:20, loss 0.5"   # the latest note
    assert lines[2].startswith("train x: 100/100 batches (100%)")


def test_a_terminal_gets_a_bar_and_no_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hrm")
    with Progress(10, "evaluate", "batches", tty=True) as bar:
        for _ in range(10):
            bar.advance(1, "note")
        assert bar._rich is not None and bar._rich.tasks[0].completed == 10
    assert not caplog.records


def test_configure_sets_the_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "EVERY_SECONDS", 30.0)
    progress.configure(5)
    assert progress.EVERY_SECONDS == 5.0
