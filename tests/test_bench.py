"""`hrm bench train` and `hrm bench memory` on the CPU, and the FLOPs formulas against torch's counter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import real_params, tiny_params, write_params
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from hrm.bench import check, flops
from hrm.bench.memory import bench_memory
from hrm.cli import main
from hrm.core import paths
from hrm.data.build import synthetic as synthetic_images
from hrm.data.puzzles.stream import synthetic as synthetic_puzzles
from hrm.pipeline.config import load_params
from hrm.train.fingerprint import make_run


def _experiment(name: str) -> dict[str, Any]:
    """A real experiment's entry without its stands_for (the tiny params hold no paper experiments)."""
    body = dict(real_params()["experiments"][name])
    body.pop("stands_for", None)
    return body


CASES = {   # (kind, model changes, recipe changes)
    "cnn": ("cnn", {}, {}),
    "image-hrm": ("hrm-image", {}, {}),
    "image-hrm-post-update-acc": ("hrm-image", {}, {"train_acc": "post_update"}),
    "image-hrm-bptt": ("hrm-image", {"gradient": "bptt"}, {}),
    "puzzle-hrm": ("hrm-puzzle", {}, {}),
    "puzzle-hrm-bptt": ("hrm-puzzle", {"gradient": "bptt"}, {}),
    "transformer": ("transformer-puzzle", {}, {}),
    # The ablation switches (issue 15): the formula follows each.
    "image-hrm-conv-stem": ("hrm-image", {"stem": "conv", "patch": 4}, {}),
    "image-hrm-learned-pos": ("hrm-image", {"position": "learned"}, {}),
    "image-hrm-no-deep-supervision": ("hrm-image", {"deep_supervision": False, "train_segments": 3}, {}),
    "image-hrm-crop-flip": ("hrm-image", {}, {"augment": "crop-flip"}),
    "recurrent-transformer": ("transformer-puzzle", {"repeats": 3}, {}),
    # TRM and its switches (issue 16); the HRM gets TRM's switches too.
    "trm": ("trm-puzzle", {}, {}),
    "trm-mlp": ("trm-puzzle", {"mixer": "mlp"}, {}),
    "trm-one-step-separate-q-learning": ("trm-puzzle", {"gradient": "one-step", "networks": "separate",
                                                        "halting": "q-learning"}, {}),
    "trm-ema": ("trm-puzzle", {}, {"ema": 0.999}),
    "puzzle-hrm-shared-last-cycle-single-pass": ("hrm-puzzle", {"networks": "shared", "gradient": "last-cycle",
                                                                "halting": "single-pass"}, {}),
}


@pytest.mark.parametrize("case", CASES)
def test_flops_formula_equals_torchs_count_of_a_real_step(case: str) -> None:
    kind, model, recipe = CASES[case]
    name = f"check-{kind}"
    params = check.variant(check.check_params(real_params(), check.OFF), name, model, recipe)
    exp = params.experiment(name)
    image = kind in ("cnn", "hrm-image")
    data = synthetic_images("mnist", 256) if image else synthetic_puzzles(check.PUZZLE_SET, 64)
    run = make_run(params, exp, 0, data)
    idx = next(run.batches())
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:   # attention as counted matmuls
        run.train_batch(idx)
    post = image and exp.recipe.train_acc == "post_update"
    assert flops.train_step(exp.model, run.shape, exp.recipe.batch_size, post) == counter.get_total_flops()


def test_bench_train_prints_consistent_measurements(project: Path, capsys: pytest.CaptureFixture) -> None:
    raw = tiny_params(**{"digits-tiny": {"group": "demo", "dataset": "digits", "model": "tiny", "recipe": "tiny",
                                         "seeds": [0], "mode": "faithful"},
                         "sudoku-demo-hrm": _experiment("sudoku-demo-hrm")})
    write_params(project, raw)
    params = load_params("params.yaml")
    for name in ("digits-tiny", "sudoku-demo-hrm"):
        assert main(["bench", "train", name, "--steps", "2", "--warmup", "1", "--synthetic", "--save"]) == 0
        out = json.loads(capsys.readouterr().out)
        exp = params.experiment(name)
        assert out["data"].startswith("synthetic") and out["device"].startswith("cpu")
        assert out["steps"] == 2 and out["seconds_per_step"] > 0
        assert out["samples_per_second"] == pytest.approx(exp.recipe.batch_size / out["seconds_per_step"])
        assert out["tflops"] == pytest.approx(out["flops_per_step"] / out["seconds_per_step"] / 1e12)
        assert out["mfu"] is None and out["energy_joules_per_epoch"] is None and out["peak_memory_bytes"]["process_rss"]
        saved = json.loads(paths.bench_file(f"train-{name}-cpu").read_text())
        assert saved["flops_per_step"] == out["flops_per_step"] and saved["provenance"]["params_hash"]
    # The image epoch is projected from the data set's size: ceil(1,438 / 256) = 6 batches.
    assert main(["bench", "train", "digits-tiny", "--steps", "1", "--warmup", "0", "--synthetic"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["steps_per_epoch"] == 6 and out["seconds_per_epoch"] == pytest.approx(6 * out["seconds_per_step"])
    # --batch: one GPU's share of a larger recipe batch; the epoch then has more steps.
    assert main(["bench", "train", "digits-tiny", "--steps", "1", "--warmup", "0", "--synthetic", "--batch", "16"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["batch_size"] == 16 and out["steps_per_epoch"] == 90        # ceil(1,438 / 16)
    assert main(["bench", "train", "digits-tiny", "--steps", "0"]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err


def test_one_step_gradient_memory_is_flat_in_depth_and_bptt_grows(project: Path) -> None:
    write_params(project, tiny_params(**{"digits-hrm": _experiment("digits-hrm")}))
    result = bench_memory(load_params("params.yaml"), "digits-hrm", (4, 8, 16), batch=4, save=True)
    one = [r["saved_bytes"] for r in result["rows"] if r["gradient"] == "one-step"]
    bptt = [r["saved_bytes"] for r in result["rows"] if r["gradient"] == "bptt"]
    assert one[0] == one[1] == one[2] > 0
    assert bptt[0] > one[0]
    # Linear in N*T: doubling the depth from 8 to 16 adds twice what 4 to 8 added.
    assert bptt[2] - bptt[1] == pytest.approx(2 * (bptt[1] - bptt[0]), rel=0.02)
    assert paths.bench_file("memory-digits-hrm-cpu", "png").stat().st_size > 0


def test_bptt_changes_the_gradient_not_the_forward() -> None:
    params = check.check_params(real_params(), check.OFF)
    grads, logits = {}, {}
    for rule in ("one-step", "bptt"):
        p = check.variant(params, "check-hrm-image", model={"gradient": rule})
        exp = p.experiment("check-hrm-image")
        run = make_run(p, exp, 0, synthetic_images("mnist", 256))
        x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        out = run.model.segment(run.model.initial_carry(2), x)
        out.logits.sum().backward()
        logits[rule] = out.logits.detach()
        grads[rule] = run.model.reasoner.f_l.blocks[0].mlp.up.weight.grad.clone()
    assert torch.equal(logits["one-step"], logits["bptt"])
    assert not torch.allclose(grads["one-step"], grads["bptt"])


def test_replay_tells_whether_a_change_altered_training(project: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["download", "digits"]) == 0 and main(["build", "digits"]) == 0
    assert main(["train", "digits-tiny", "--seed", "0"]) == 0
    capsys.readouterr()
    assert main(["bench", "replay", "digits-tiny", "--seed", "0", "--steps", "4"]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["same"] and same["batches"] == 4 and same["max_abs_difference"] == 0.0
    raw = tiny_params()
    raw["recipes"]["tiny"]["lr"] *= 2                     # a change that does alter training
    write_params(project, raw)
    assert main(["bench", "replay", "digits-tiny", "--seed", "0", "--steps", "4"]) == 1
    assert json.loads(capsys.readouterr().out)["max_abs_difference"] > 0
