"""Drift tests: dvc.yaml, the stage table and the Snakemake rules must agree on every job."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, real_params, write_params

from hrm.cli import main
from hrm.pipeline import stages
from hrm.pipeline.config import load_params

BIN = Path(sys.executable).parent


def snakemake_plan(root: Path, target: str, *options: str) -> list[dict[str, object]]:
    """Jobs of `snakemake -n -p --forceall [OPTIONS] TARGET`: rule, inputs, outputs, log, resources, shell."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run([str(BIN / "snakemake"), "-n", "-p", "--forceall", *options, "--", target], cwd=root,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr + out.stdout
    jobs = []
    for block in re.split(r"\n(?=(?:rule|checkpoint) \S+:)", out.stdout + out.stderr)[1:]:
        job: dict[str, object] = {"rule": block.split(":", 1)[0].split()[1]}
        for key in ("input", "output", "log"):
            m = re.search(rf"^    {key}: (.*)$", block, re.M)
            job[key] = set(m.group(1).split(", ")) if m else set()
        m = re.search(r"^    threads: (\d+)$", block, re.M)
        job["threads"] = int(m.group(1)) if m else 1
        m = re.search(r"^    resources: (.*)$", block, re.M)
        job["resources"] = dict(kv.split("=", 1) for kv in m.group(1).split(", ")) if m else {}
        m = re.search(r"^Shell command: (.*)$", block, re.M)
        job["shell"] = m.group(1) if m and m.group(1) != "None" else None
        jobs.append(job)
    return jobs


def strip_redirect(cmd: str) -> str:
    return re.sub(r"\s*>\s*\S+\s+2>&1\s*$", "", cmd)


def test_committed_dvc_yaml_is_current(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert main(["dvc-yaml", "--check"]) == 0
    assert (REPO / "dvc.yaml").read_text() == stages.dvc_yaml(load_params())


def test_stale_dvc_yaml_is_detected(project: Path) -> None:
    assert main(["dvc-yaml"]) == 0
    raw = yaml.safe_load(Path("params.yaml").read_text())
    raw["experiments"]["digits-tiny"]["seeds"] = [0, 1]
    write_params(project, raw)
    assert main(["dvc-yaml", "--check"]) == 1
    assert main(["dvc-yaml"]) == 0 and main(["dvc-yaml", "--check"]) == 0


def test_dvc_yaml_caches_data_and_models_but_not_audited_results(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    dvc = yaml.safe_load(Path("dvc.yaml").read_text())["stages"]
    for name, stage in dvc.items():
        for out in stage.get("outs", []) + stage.get("metrics", []):
            path, opts = (out, {}) if isinstance(out, str) else next(iter(out.items()))
            cached = opts.get("cache", True)
            if path.startswith("results/") and not path.endswith("model.pt"):
                assert cached is False, (name, path)
            else:
                assert cached is True, (name, path)


def test_snakemake_and_dvc_agree_on_every_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    table = {s.cmd: s for s in stages.stage_table(load_params())}
    jobs = [j for j in snakemake_plan(REPO, "all") if j["shell"]]
    assert len(jobs) == len(table)
    for job in jobs:
        cmd = strip_redirect(str(job["shell"]))
        assert cmd in table, f"Snakemake runs {cmd!r}, which is not a DVC stage"
        stage = table.pop(cmd)
        assert job["rule"].removesuffix("_puzzle") == stage.verb   # puzzle evaluations have their own rule
        assert job["output"] == set(stage.outs + stage.outs_no_cache), stage.name
        assert job["input"] == set(stage.deps), stage.name
        assert job["log"] == {stage.log}, stage.name
    assert not table, f"DVC stages Snakemake never plans: {sorted(table)}"
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    dvc_outs = {next(iter(o)) if isinstance(o, dict) else o
                for s in dvc.values() for o in s.get("outs", []) + s.get("metrics", [])}
    snake_outs = {o for j in jobs for o in j["output"]}
    assert snake_outs == dvc_outs


def test_train_cifar_plans_exactly_the_cifar_training_runs() -> None:
    jobs = snakemake_plan(REPO, "train_cifar")
    trains = {strip_redirect(str(j["shell"])) for j in jobs if j["rule"] == "train"}
    params = load_params(REPO / "params.yaml")
    expected = {f"python -m hrm train {e.name} --seed {s}" for e in params.experiments.values()
                if e.dataset in ("cifar10", "cifar100") for s in e.seeds}
    assert trains == expected and expected
    assert {j["rule"] for j in jobs} == {"download", "build", "fingerprint", "train", "train_cifar"}


def test_train_mnist_and_demo_targets() -> None:
    mnist = {j["rule"] for j in snakemake_plan(REPO, "train_mnist")}
    assert mnist == {"download", "build", "fingerprint", "train", "train_mnist"}
    demo = snakemake_plan(REPO, "demo")
    shells = {strip_redirect(str(j["shell"])) for j in demo if j["shell"]}
    assert "python -m hrm report demo" in shells and "python -m hrm report paper" not in shells
    assert all("cifar" not in s and "mnist" not in s for s in shells)


def test_params_change_is_a_snakemake_rerun_trigger() -> None:
    # Only values passed through a rule's params: trigger reruns; the train rule passes the params hash.
    text = (REPO / "workflow/rules/train.smk").read_text()
    assert "params_hash()" in text and real_params()["experiments"]


def test_snakemake_lint_is_clean() -> None:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run([str(BIN / "snakemake"), "--lint"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "in a good condition" in out.stdout + out.stderr, out.stdout + out.stderr


def test_only_jobs_that_hold_a_gpu_count_against_the_gpu_limit() -> None:
    """Train and evaluate jobs hold GPUs only when they will use CUDA: here (no CUDA, device auto)
    none does, so `--cores 2` runs two demo jobs at once, one thread each, and a CPU paper run takes
    every core. With GPUs (faked: --config gpus=2) each holds one and takes a free one (--gpu-slots).
    On a cluster (the SLURM profile's gpu_nodes=true) every such job asks SLURM through `gres`, and
    the local `gpu` counter stays 0 (hrm.runtime.launch; tests/test_cluster.py reads the sbatch flags)."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: every train/evaluate job holds a GPU")
    gpu_rules = {"train", "evaluate", "evaluate_puzzle"}
    demo = [j for j in snakemake_plan(REPO, "demo", "--cores", "2") if j["rule"] in gpu_rules]
    assert demo and all(j["resources"].get("gpu") == "0" and j["threads"] == 1 for j in demo)
    paper = [j for j in snakemake_plan(REPO, "train_mnist", "--cores", "2") if j["rule"] == "train"]
    assert paper and all(j["threads"] == 2 for j in paper)       # Snakemake sets OMP_NUM_THREADS to it
    gpus = [j for j in snakemake_plan(REPO, "train_mnist", "--cores", "2", "--config", "gpus=2")
            if j["rule"] == "train"]
    assert gpus and all(j["resources"].get("gpu") == "1" and j["threads"] == 1 for j in gpus)
    cluster = [j for j in snakemake_plan(REPO, "train_mnist", "--cores", "2", "--config", "gpu_nodes=true")
               if j["rule"] == "train"]
    assert cluster and all(j["resources"].get("gpu") == "0" and j["resources"].get("gres") == "gpu:1"
                           for j in cluster)
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert "gpu_nodes=true" in profile["config"]
    assert "gres" not in json.dumps(profile) and "gpus" not in json.dumps(profile)


def test_adding_a_seed_leaves_the_existing_runs_stages_unchanged(tmp_path: Path) -> None:
    """A run's stages depend on its experiment's keys but not on the seed list, so `dvc status` keeps a
    finished run up to date when seeds are added (the report, which lists the seeds, does change)."""
    raw = real_params()
    before = {s.name: s for s in stages.stage_table(load_params(write_params(tmp_path, raw)))}
    raw["experiments"]["mnist-hrm"]["seeds"] = [42, 1, 2]
    after = {s.name: s for s in stages.stage_table(load_params(write_params(tmp_path, raw)))}
    for verb in ("train", "evaluate"):
        assert before[f"{verb}-mnist-hrm-seed42"] == after[f"{verb}-mnist-hrm-seed42"]
        assert f"{verb}-mnist-hrm-seed1" in after
        assert "experiments.mnist-hrm.seeds" not in after[f"{verb}-mnist-hrm-seed42"].params
    assert "experiments.mnist-hrm.mode" in after["train-mnist-hrm-seed42"].params
    assert before["report-paper"] != after["report-paper"]
