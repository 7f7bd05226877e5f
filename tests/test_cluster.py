"""The SLURM profile, parsed by the real executor plugin: every GPU rule asks SLURM for its GPUs.

A dry run loads profiles/slurm through snakemake-executor-plugin-slurm (the `cluster` extra) and
prints each job's resources; the plugin's own functions then turn those resources into sbatch
flags, so the test sees the request a cluster would get, without a cluster. The scratch project's
params give one ARC experiment 8 processes and a copy of it 2 nodes of 8.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO, real_params, workflow_project
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string

BIN = Path(sys.executable).parent
GPU_RULES = {"train", "train_nodes", "evaluate", "evaluate_puzzle", "analyze"}


class _Resources(dict):
    """What the plugin reads from a job: `resources.get(key)` and `resources.key`."""

    def __getattr__(self, key: str) -> object:
        return self[key]


def _value(text: str) -> object:
    return int(text) if text.isdigit() else text


def scratch(tmp_path: Path) -> Path:
    """The workflow with params in which arc1-hrm trains on 8 GPUs and arc1-hrm-2nodes on 2 nodes of 8."""
    raw = real_params()
    raw["experiments"]["arc1-hrm"]["processes"] = 8
    two = {k: v for k, v in raw["experiments"]["arc1-hrm"].items() if k != "analyses"}
    raw["experiments"]["arc1-hrm-2nodes"] = {**two, "nodes": 2}
    return workflow_project(tmp_path / "proj", raw)


def dry_run(root: Path, *targets: str) -> list[tuple[str, _Resources, str]]:
    """(rule, resources, shell command) of every job `snakemake --workflow-profile profiles/slurm -n -p` plans."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([str(BIN / "snakemake"), "--workflow-profile", "profiles/slurm", "-n", "-p", *targets],
                         cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out.stdout):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        resources = re.search(r"^\s+resources: (.*)$", block, re.M)
        shell = re.search(r"^Shell command: (.*)$", block, re.M)
        if rule and resources:
            pairs = (item.split("=", 1) for item in resources.group(1).split(", "))
            jobs.append((rule.group(1), _Resources({k: _value(v) for k, v in pairs}), shell.group(1) if shell else ""))
    return jobs


def sbatch(res: _Resources) -> str:
    params = {"run_uuid": "x", "slurm_logfile": "log", "comment_str": "train", "account": "", "partition": "-p gpu",
              "workdir": "."}
    return get_submit_command(type("Job", (), {"resources": res, "threads": 1}), params)


def test_every_gpu_rule_asks_slurm_for_its_gpus(tmp_path: Path) -> None:
    jobs = dry_run(scratch(tmp_path), "train_cifar", "train_arc")
    rules = {rule for rule, _, _ in jobs}
    assert {"download", "build", "train", "train_nodes"} <= rules
    for rule, res, _ in jobs:
        if rule in GPU_RULES:
            assert res["slurm_partition"] == "gpu" and not res["gpu"], (rule, res)
            assert set_gres_string(type("Job", (), {"resources": res})).startswith(" --gres=gpu:"), (rule, res)
        else:                                           # data preparation: CPU nodes, no GPU
            assert "gpu" not in res and "gres" not in res, (rule, res)
    assert all(res["slurm_partition"] == "cpu" for rule, res, _ in jobs if rule in ("download", "build"))

    by_run = {re.search(r"train (\S+) --seed", shell).group(1): (rule, res, shell)
              for rule, res, shell in jobs if rule in ("train", "train_nodes")}
    rule, cifar, shell = by_run["cifar10-cnn"]                     # one GPU, one node, one task
    assert rule == "train" and cifar["gres"] == "gpu:1" and "srun" not in shell
    call = sbatch(cifar)
    assert "-t 720" in call and "--mem 32000" in call and "--ntasks=1" not in call  # the profile's train resources

    rule, arc, shell = by_run["arc1-hrm"]                          # 8 GPUs of one node: torchrun inside
    assert rule == "train" and arc["gres"] == "gpu:8" and "--gres=gpu:8" in set_gres_string(
        type("Job", (), {"resources": arc}))
    assert shell.startswith("python -m hrm train arc1-hrm")        # hrm launches torchrun itself

    rule, two, shell = by_run["arc1-hrm-2nodes"]                   # 2 nodes x 8 GPUs: srun, a torchrun per node
    assert rule == "train_nodes" and two["gres"] == "gpu:8"
    call = sbatch(two)
    assert "--nodes=2" in call and "--ntasks=2" in call and "--ntasks-per-gpu" not in call, call
    assert shell.startswith("srun --nodes=2 --ntasks-per-node=1 python -m hrm train arc1-hrm-2nodes")
