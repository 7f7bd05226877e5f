"""Speed options change nothing but speed: each on vs off gives the same losses (on the CPU where the
option exists here; `make gpu-check` runs all of them on CUDA), and the gpu-check's comparison can fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, real_params

from hrm.bench import check
from hrm.cli import main
from hrm.models.hrm import ImageHRM
from hrm.models.registry import Shape
from hrm.pipeline.config import load_params
from hrm.runtime import speed


@pytest.fixture
def base(mnist_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("HRM_DATA_DIR", str(mnist_dir.parent))
    monkeypatch.chdir(REPO.parent)            # no data/built/mnist here: the check reads the raw copy
    monkeypatch.setattr(speed, "BACKEND", "aot_eager")   # graph capture checked without a C++ build
    raw = real_params()
    raw["runtime"] |= {"num_threads": 1, "deterministic": True}
    return raw


def test_every_cpu_speed_option_gives_the_reference_losses(base: dict) -> None:
    rows = check.compare(base, "cpu", check.CPU_VARIANTS)
    kinds = set(check.REGISTRY)
    assert {r["kind"] for r in rows} == kinds and len(rows) == len(kinds) * len(check.CPU_VARIANTS)
    for r in rows:
        # On the CPU every option reproduces fp32 to rounding, far inside the gpu-check's tolerance.
        err = max(abs(a - b) / abs(a) for a, b in zip(r["reference"], r["losses"]))
        assert r["agree"] and err < 1e-5, (r["kind"], r["variant"], r["reference"], r["losses"])
    # The losses move: four steps of training are compared, not four copies of the first.
    assert all(len(set(r["reference"])) == check.STEPS for r in rows)


def test_the_comparison_catches_a_different_computation(base: dict) -> None:
    rows = check.compare(base, "cpu", ("fp32", "wrong-lr"), kinds=("hrm-image", "hrm-puzzle"),
                         overrides={"wrong-lr": {"recipe": {"lr": 3e-3}}})
    assert [r["agree"] for r in rows] == [True, False, True, False]
    # An option that breaks (here: a kernel the CPU lacks) is a reported disagreement, not a crash.
    broken = check.compare(base, "cpu", ("efficient",), kinds=("hrm-image",))
    assert not broken[0]["agree"] and broken[0]["error"] and broken[0]["losses"] == []


def test_gpu_check_refuses_clearly_without_cuda(capsys: pytest.CaptureFixture) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available: gpu-check runs for real")
    assert main(["bench", "gpu-check", "--params", str(REPO / "params.yaml")]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err


def test_bf16_pure_keeps_the_carry_in_bf16_and_fp32_is_bit_identical() -> None:
    cfg = check.check_params(real_params(), check.OFF).experiment("check-hrm-image").model
    model = ImageHRM(cfg, Shape(10, (1, 28, 28)))
    model.init_weights(torch.Generator().manual_seed(0))
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    plain = model.segment(model.initial_carry(3), x)
    model.carry_dtype = torch.float32          # the pure path with fp32 as its dtype: the same numbers
    same = model.segment(model.initial_carry(3), x)
    assert torch.equal(plain.logits, same.logits) and torch.equal(plain.carry.z_h, same.carry.z_h)
    model.carry_dtype = torch.bfloat16         # what set_precision does on CUDA under bf16-pure (autocast on)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.segment(model.initial_carry(3), x)
    assert out.carry.z_h.dtype == out.carry.z_l.dtype == torch.bfloat16
    assert speed.carry_dtype(torch.device("cpu"), "bf16-pure") is None     # the CPU stays fp32


def test_speed_keys_are_validated(tmp_path: Path) -> None:
    raw = real_params()
    raw["runtime"]["optimizer"] = "fast"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(Exception, match="runtime.optimizer: got 'fast'; allowed: 'foreach', 'fused', 'loop'"):
        load_params(path)


def test_an_ablation_switch_at_its_default_keeps_existing_runs_valid() -> None:
    params = load_params(REPO / "params.yaml")
    exp = params.experiment("mnist-hrm")
    recorded = json.loads((REPO / "results/runs/mnist-hrm/seed42/metrics.json").read_text())
    assert exp.model.gradient == "one-step" and exp.params_hash() == recorded["provenance"]["params_hash"]
    raw = real_params()
    raw["models"]["hrm-mnist"]["gradient"] = "bptt"
    from hrm.pipeline.config import parse_params

    assert parse_params(raw, Path("x")).experiment("mnist-hrm").params_hash() != exp.params_hash()
