"""Progress reporting: a rich bar on a terminal, plain log lines otherwise (CI, DVC, Snakemake logs)."""

from __future__ import annotations

import logging
import sys
from types import TracebackType

log = logging.getLogger("hrm")


class Progress:
    """`with Progress(total, "label") as p: p.advance(n, note)`.

    Piped, it prints a line at every 10% (or, with `notes_only`, only when `advance` gets a note).
    """

    def __init__(self, total: int, label: str, unit: str = "", notes_only: bool = False) -> None:
        self.total, self.label, self.unit, self.notes_only = max(total, 1), label, unit, notes_only
        self.done = 0
        self._next_log = 0.1
        self._rich = None
        if sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeRemainingColumn(), TextColumn("{task.fields[note]}"), transient=True)
            self._task = self._rich.add_task(label, total=self.total, note="")

    def __enter__(self) -> Progress:
        if self._rich is not None:
            self._rich.start()
        return self

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done += n
        if self._rich is not None:
            self._rich.update(self._task, advance=n, note=note)
        elif self.notes_only:
            if note:
                log.info("%s: %d/%d %s %s", self.label, self.done, self.total, self.unit, note)
        elif self.done / self.total >= self._next_log or self.done >= self.total:
            log.info("%s: %d/%d %s %s", self.label, self.done, self.total, self.unit, note)
            while self._next_log <= self.done / self.total:
                self._next_log += 0.1

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._rich is not None:
            self._rich.stop()
