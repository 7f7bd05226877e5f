"""The SLURM profile, parsed by the real executor plugin: every GPU rule asks SLURM for its GPUs.

A dry run loads profiles/slurm through snakemake-executor-plugin-slurm (the `cluster` extra) and
prints each job's resources; the plugin's own functions then turn those resources into sbatch
flags, so the test sees the request a cluster would get, without a cluster.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string

BIN = Path(sys.executable).parent
GPU_RULES = {"train", "evaluate", "evaluate_puzzle"}


class _Resources(dict):
    """What the plugin reads from a job: `resources.get(key)` and `resources.key`."""

    def __getattr__(self, key: str) -> object:
        return self[key]


def _value(text: str) -> object:
    return int(text) if text.isdigit() else text


def dry_run_jobs(*targets: str) -> list[tuple[str, _Resources]]:
    """(rule, resources) of every job `snakemake --workflow-profile profiles/slurm -n TARGETS` plans."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run([str(BIN / "snakemake"), "--workflow-profile", "profiles/slurm", "-n", *targets],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out.stdout):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        resources = re.search(r"^\s+resources: (.*)$", block, re.M)
        if rule and resources:
            pairs = (item.split("=", 1) for item in resources.group(1).split(", "))
            jobs.append((rule.group(1), _Resources({k: _value(v) for k, v in pairs})))
    return jobs


def test_every_gpu_rule_asks_slurm_for_its_gpu() -> None:
    jobs = dry_run_jobs("train_cifar", "train_arc")
    rules = {rule for rule, _ in jobs}
    assert {"download", "build", "train"} <= rules
    for rule, res in jobs:
        if rule in GPU_RULES:
            assert res["gpu"] == 1 and res["slurm_partition"] == "gpu", (rule, res)
            assert set_gres_string(type("Job", (), {"resources": res})) == " --gpus=1"
        else:                                           # data preparation: CPU nodes, no GPU
            assert "gpu" not in res, (rule, res)
    train = next(res for rule, res in jobs if rule == "train")
    assert train["runtime"] == 720 and train["cpus_per_task"] == 8
    assert all(res["slurm_partition"] == "cpu" for rule, res in jobs if rule in ("download", "build"))

    params = {"run_uuid": "x", "slurm_logfile": "log", "comment_str": "train", "account": "", "partition": "-p gpu",
              "workdir": "."}
    call = get_submit_command(type("Job", (), {"resources": train, "threads": 1}), params)
    assert "-t 720" in call and "--mem 32000" in call               # the profile's set-resources for train
