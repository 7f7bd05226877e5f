"""Provenance recorded with every result: command, commit, params hash, hardware, date."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from typing import Any


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


# What the pipeline itself writes while it runs: DVC's lock file and the results. A change there
# does not change what runs (a `dvc repro` rewrites dvc.lock after each stage, before the next).
RECORDS = ("dvc.lock", "results")


def git_commit() -> dict[str, Any]:
    commit = _git("rev-parse", "HEAD")
    # Untracked files do not change what ran; modified tracked files (code, params) do.
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".",
                  *(f":(exclude){path}" for path in RECORDS))
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device_name: str | None = None) -> dict[str, Any]:
    import torch

    return {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "gpu": device_name,
            # the GPUs this job was given (hrm.runtime.launch.pin, SLURM, or the user); null = every one
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "platform": platform.platform()}


_ARGV: list[str] | None = None
_START_COMMIT: dict[str, Any] | None = None


def set_command(argv: list[str]) -> None:
    """Called by the CLI with the arguments it parsed (sys.argv is not ours under pytest).

    The commit is taken here, when the command starts: an hour-long training must record the
    code it ran, not whatever was committed while it ran.
    """
    global _ARGV, _START_COMMIT
    _ARGV = list(argv)
    _START_COMMIT = git_commit()


def command() -> str:
    return " ".join(["python -m hrm", *(sys.argv[1:] if _ARGV is None else _ARGV)])


def record(params_hash: str, device_name: str | None = None) -> dict[str, Any]:
    return {"command": command(), **(_START_COMMIT or git_commit()), "params_hash": params_hash,
            "hardware": hardware(device_name),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
