"""Progress of every long stage, one style: a rich bar with rate and ETA on a terminal; without one
(CI, DVC, Snakemake and SLURM logs) a plain line every `runtime.progress_seconds`, never a redraw.

    with Progress(total, "label", "batches") as bar:
        bar.advance(1, "loss 0.31")      # the note shows on the bar, and in the next plain line
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger("hrm")

# Seconds between plain lines; the CLI sets it from params (runtime.progress_seconds).
EVERY_SECONDS = 30.0


def configure(every_seconds: float) -> None:
    global EVERY_SECONDS
    EVERY_SECONDS = float(every_seconds)


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """A bar on a terminal (`sys.stderr.isatty()`), else a log line at most every EVERY_SECONDS and
    one at the end; the lines carry done/total, the rate, the ETA and the latest note."""

    def __init__(self, total: int, label: str, unit: str = "", *, tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.label, self.unit = max(total, 1), label, unit
        self.done, self.note, self._clock = 0, "", clock
        self._start = self._last = clock()
        self._start_done = 0
        self._rich = None
        # A bar on a terminal; of a torchrun launch, rank 0's only (the others log nothing below warnings).
        if (sys.stderr.isatty() if tty is None else tty) and os.environ.get("RANK", "0") == "0":
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TaskProgressColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                                      TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[note]}"),
                                      transient=True)
            self._task = self._rich.add_task(label, total=self.total, note="", rate="")

    def __enter__(self) -> Progress:
        if self._rich is not None:
            self._rich.start()
        return self

    def skip(self, n: int) -> None:
        """Mark work done before this process started (a resumed run): counted, not in the rate."""
        self.done += n
        self._start_done = self.done
        if self._rich is not None:
            self._rich.update(self._task, completed=self.done)

    def rate(self) -> float:
        """Units per second since this process started."""
        return (self.done - self._start_done) / max(self._clock() - self._start, 1e-9)

    def line(self) -> str:
        rate = self.rate()
        eta = _clock((self.total - self.done) / rate) if rate > 0 else "?"
        unit = f" {self.unit}" if self.unit else ""
        text = (f"{self.label}: {self.done}/{self.total}{unit} ({100 * self.done / self.total:.0f}%), "
                f"{rate:.3g}{unit}/s, ETA {eta}")
        return text + (f", {self.note}" if self.note else "")

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done += n
        self.note = note or self.note
        if self._rich is not None:
            unit = f" {self.unit}" if self.unit else ""
            self._rich.update(self._task, advance=n, note=self.note, rate=f"{self.rate():.3g}{unit}/s")
            return
        now = self._clock()
        if now - self._last >= EVERY_SECONDS or self.done >= self.total:
            self._last = now
            log.info("%s", self.line())

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._rich is not None:
            self._rich.stop()
