"""GPU jobs side by side on one machine, tested on the CPU with a faked GPU count: each job takes free
GPUs (a lock per GPU, hrm.runtime.launch.pin) and Snakemake runs as many GPU jobs at once as there are GPUs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, tiny_params, workflow_project

BIN = Path(sys.executable).parent
HOLD = ("import sys; from hrm.runtime.launch import pin; "
        "print(','.join(pin(int(sys.argv[1]), int(sys.argv[2]))), flush=True); sys.stdin.read()")


def holder(k: int, total: int, env: dict[str, str]) -> subprocess.Popen:
    """A process that takes k of `total` GPUs, prints them and holds them until its stdin closes."""
    return subprocess.Popen([sys.executable, "-c", HOLD, str(k), str(total)], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_jobs_take_distinct_free_gpus_and_wait_for_one(tmp_path: Path) -> None:
    env = {**os.environ, "HRM_GPU_SLOT_DIR": str(tmp_path), "PYTHONPATH": str(REPO / "src")}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    first = [holder(1, 3, env) for _ in range(3)]
    held = [p.stdout.readline().strip() for p in first]
    assert sorted(held) == ["0", "1", "2"]                  # three jobs, three different GPUs

    waiting = holder(1, 3, env)                             # a fourth waits while all three are held
    time.sleep(2.5)
    assert waiting.poll() is None
    first[1].communicate("", timeout=30)                    # one job ends: its lock goes with it
    assert waiting.stdout.readline().strip() == held[1]     # and the waiting job gets that GPU
    for p in (first[0], first[2], waiting):
        p.communicate("", timeout=30)

    # Several GPUs for one (multi-process) job, numbered as the visible devices the job was given.
    pair = holder(2, 2, {**env, "CUDA_VISIBLE_DEVICES": "4,6"})
    assert pair.stdout.readline().strip() == "4,6"
    pair.communicate("", timeout=30)
    too_many = subprocess.run([sys.executable, "-c", HOLD, "3", "2"], env=env, capture_output=True, text=True,
                              input="", timeout=60)
    assert too_many.returncode != 0 and "needs 3 GPU(s) but the machine has 2" in too_many.stderr


def _scratch(tmp_path: Path) -> Path:
    raw = tiny_params(**{f"digits-{x}": {"group": "demo", "dataset": "digits", "model": "tiny", "recipe": "tiny",
                                         "seeds": [0], "mode": "faithful"} for x in "ab"})
    raw["recipes"]["tiny"]["epochs"] = 1
    return workflow_project(tmp_path / "proj", raw)


def _snakemake(root: Path, gpus: int, *extra: str) -> list[str]:
    """Snakemake's progress lines for the two trainings on a machine said to have `gpus` GPUs."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(REPO / "src"),
           "HRM_GPU_SLOT_DIR": str(root / "slots")}
    targets = [f"results/demo/runs/digits-{x}/seed0/metrics.json" for x in "ab"]
    out = subprocess.run([str(BIN / "snakemake"), "--cores", "2", "--config", f"gpus={gpus}", *extra, "--", *targets],
                         cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    wanted = re.compile(r"(local)?rule train:|Finished jobid: \d+ \(Rule: train\)|Shell command: python -m hrm")
    return [ln for ln in (out.stdout + out.stderr).splitlines() if wanted.match(ln)]


def _pins(root: Path) -> list[str]:
    import json

    return sorted(json.loads((root / f"results/demo/runs/digits-{x}/seed0/metrics.json").read_text())
                  ["provenance"]["hardware"]["cuda_visible_devices"] for x in "ab")


@pytest.mark.slow
def test_snakemake_runs_one_training_per_gpu(tmp_path: Path) -> None:
    root = _scratch(tmp_path)
    # Two GPUs: both trainings start before either ends, each on its own GPU.
    lines = _snakemake(root, 2)
    events = [ln.split()[0] for ln in lines if not ln.startswith("Shell")]
    assert events[:2] == ["localrule", "localrule"] and events.count("Finished") == 2, lines
    assert all("--gpu-slots 2 train" in ln for ln in lines if ln.startswith("Shell command: python -m hrm --"))
    assert _pins(root) == ["0", "1"]
    # One GPU: one training at a time, both on GPU 0.
    lines = _snakemake(root, 1, "--forcerun", "train")
    events = [ln.split()[0] for ln in lines if not ln.startswith("Shell")]
    assert events == ["localrule", "Finished", "localrule", "Finished"], lines
    assert _pins(root) == ["0", "0"]


def test_gpu_figures_of_a_run_are_summed_over_its_ranks() -> None:
    from hrm.core.gpu import sum_over_ranks

    rank = {"device_name": "NVIDIA H200", "nvml_peak_memory_used_mib": 1000.0, "nvml_mean_utilization_pct": 80.0,
            "energy_joules": 50.0, "energy_source": "nvmlDeviceGetTotalEnergyConsumption",
            "torch_max_memory_allocated_mib": 600.0, "torch_max_memory_reserved_mib": 700.0}
    other = rank | {"nvml_mean_utilization_pct": 60.0, "energy_joules": 70.0}
    total = sum_over_ranks([rank, other])
    assert total["energy_joules"] == 120.0 and total["nvml_peak_memory_used_mib"] == 2000.0
    assert total["torch_max_memory_reserved_mib"] == 1400.0 and total["nvml_mean_utilization_pct"] == 70.0
    assert total["gpus"] == 2 and total["device_name"] == "NVIDIA H200"
    assert sum_over_ranks([rank]) == rank                                   # one process: unchanged
    cpu = dict.fromkeys(rank)
    assert sum_over_ranks([cpu, cpu]) == cpu | {"gpus": None}               # the CPU: nulls stay null
    assert sum_over_ranks([rank, other | {"energy_joules": None}])["energy_joules"] is None
