"""Golden tests: the authors' own code, run on the CPU in float32, against ours with their weights.

The fixtures (`../shared/fixtures/reference/`, documented in its README) hold the authors' weights,
a batch, and every output, halting decision, loss and gradient of a few steps. We load the
weights through an explicit name map and must reproduce everything within the stated tolerance.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from hrm.core.checkpoint import RunState
from hrm.core.losses import act_loss
from hrm.models.act import act_step, initial_state
from hrm.models.authors import name_map
from hrm.models.optim import adamw
from hrm.models.registry import PuzzleHRMConfig, Shape, TRMConfig, build_model
from hrm.pipeline import studies
from hrm.pipeline.config import load_params
from hrm.runtime.speed import autocast
from hrm.train.image import StepContext, hrm_image_step, make_schedule

FIXTURES = Path(os.environ.get("HRM_TEST_FIXTURES", Path(__file__).resolve().parents[2] / "shared/fixtures/reference"))
# Puzzle fixtures are PyTorch code run in float32 on one CPU thread: the same kernels on the same
# inputs, so every output, loss and gradient must be bit-identical.
PUZZLE_TOL = dict(rtol=0, atol=0)
# The image fixture is JAX/XLA: different kernels, agreement to about 1e-5 (README).
IMAGE_TOL = dict(rtol=1e-4, atol=2e-5)


def _load(name: str) -> dict[str, np.ndarray]:
    path = FIXTURES / name
    if not path.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{path}: golden fixture missing (CI must run with ../shared beside the checkout)")
        pytest.skip(f"{path}: golden fixture missing")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


# ------------------------------------------------------------------ puzzle HRM (sapientinc/HRM)

PUZZLE_CONFIG = PuzzleHRMConfig(
    hidden=64, heads=4, mlp_inner=256, mlp="swiglu", norm_gain=False, norm_eps=1e-5, rope="half",
    rope_base=10000.0, low_layers=2, high_layers=2, high_cycles=2, low_steps=2, kind="hrm-puzzle",
    halt_max_steps=4, halt_exploration=0.0)


# TRM (SamsungSAILMontreal/TinyRecursiveModels): one network, T=3 recursions of n=2, a 16-position prefix.
def trm_config(mixer: str) -> TRMConfig:
    return TRMConfig(hidden=64, heads=4, mlp_inner=256, mlp="swiglu", norm_gain=False, norm_eps=1e-5, rope="half",
                     rope_base=10000.0, kind="trm-puzzle", layers=2, recursions=3, latent_steps=2, mixer=mixer,
                     puzzle_prefix=16, halt_max_steps=4, halt_exploration=0.0)


TRM_FIXTURES = {"attention": "trm-tiny.npz", "mlp": "trm-mlp-tiny.npz"}


def _puzzle_model(fx: dict[str, np.ndarray], config: PuzzleHRMConfig | TRMConfig = PUZZLE_CONFIG,
                  names: dict[str, str] | None = None) -> torch.nn.Module:
    model = build_model(config, Shape(classes=11, seq_len=16, puzzle_ids=4))
    names = names or name_map()
    model.load_state_dict({ours: torch.from_numpy(fx[theirs]) for theirs, ours in names.items()}, strict=True)
    return model


def _batch(fx: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(fx[f"batch/{k}"]) for k in ("inputs", "labels", "puzzle_identifiers"))


def _close(ours: torch.Tensor, theirs: np.ndarray, what: str, tol: dict) -> None:
    np.testing.assert_allclose(ours.detach().double().numpy(), theirs.astype(np.float64), err_msg=what, **tol)


def _check_act_run(fx: dict[str, np.ndarray], model: torch.nn.Module, names: dict[str, str], mode: str) -> None:
    """Four ACT calls on the fixture's batch: halting, outputs, carries, losses; step-1 gradients."""
    torch.set_num_threads(1)
    model.train(mode == "train")
    x, y, pid = _batch(fx)
    state = initial_state(model, x, y, pid)
    for t in range(1, 5):
        with torch.set_grad_enabled(mode == "train" and t == 1):
            state, out = act_step(model, state, x, y, pid, torch.Generator().manual_seed(1000 + t))
            loss = act_loss(out.out.logits, state.labels, out.out.q_halt, out.out.q_continue,
                            out.target_q_continue)
        key = f"{mode}/step{t}/"
        np.testing.assert_array_equal(state.halted.long().numpy(), fx[key + "halted"], err_msg=key + "halted")
        np.testing.assert_array_equal(state.steps.numpy(), fx[key + "steps"], err_msg=key + "steps")
        for ours, theirs in ((out.out.logits, "logits"), (out.out.q_halt, "q_halt_logits"),
                             (out.out.q_continue, "q_continue_logits"), (state.carry.z_h, "z_H"),
                             (state.carry.z_l, "z_L")):
            _close(ours, fx[key + theirs], key + theirs, PUZZLE_TOL)
        if key + "target_q_continue" in fx:
            _close(out.target_q_continue, fx[key + "target_q_continue"], key + "target_q_continue", PUZZLE_TOL)
            _close(loss.q_continue, fx[key + "q_continue_loss"], key + "q_continue_loss", PUZZLE_TOL)
        else:                    # single-pass halting: no continue target, no continue loss
            assert out.target_q_continue is None and float(loss.q_continue) == 0.0
        for ours, theirs in ((loss.total, "loss"), (loss.lm, "lm_loss"), (loss.q_halt, "q_halt_loss")):
            _close(ours, fx[key + theirs], key + theirs, PUZZLE_TOL)
        if mode == "train" and t == 1:
            loss.total.backward()
            grads = {n: p.grad for n, p in model.named_parameters()}
            mapped = {ours: theirs for theirs, ours in names.items()}
            assert len(grads) == sum(k.startswith("grad/") for k in fx) - 2   # less the puzzle rows and ids
            for name, grad in grads.items():
                _close(grad, fx["grad/" + mapped[name]], "grad " + name, PUZZLE_TOL)
            touched = out.out.puzzle_rows
            _close(touched.rows.grad, fx["grad/inner.puzzle_emb.local_weights"], "puzzle grad", PUZZLE_TOL)
            np.testing.assert_array_equal(touched.ids.numpy(), fx["grad/inner.puzzle_emb.local_ids"])


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_puzzle_hrm_matches_authors(mode: str) -> None:
    fx = _load("puzzle-hrm-tiny.npz")
    _check_act_run(fx, _puzzle_model(fx), name_map(), mode)


@pytest.mark.parametrize("mixer", ["attention", "mlp"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_trm_matches_authors(mixer: str, mode: str) -> None:
    """TRM-Att and TRM-MLP: the last recursion's full gradient, single-pass halting, the 16-position prefix."""
    fx = _load(TRM_FIXTURES[mixer])
    names = name_map(levels=(("L", "f_l"),), mixer=mixer)
    _check_act_run(fx, _puzzle_model(fx, trm_config(mixer), names), names, mode)


def test_puzzle_golden_fails_on_a_wrong_weight() -> None:
    """The comparison can fail: one perturbed block weight moves the logits out of tolerance."""
    fx = _load("puzzle-hrm-tiny.npz")
    model = _puzzle_model(fx)
    with torch.no_grad():
        model.reasoner.f_l.blocks[0].mlp.down.weight[0, 0] += 1e-2
    model.eval()
    x, y, pid = _batch(fx)
    state, out = act_step(model, initial_state(model, x, y, pid), x, y, pid)
    with pytest.raises(AssertionError):
        _close(out.out.logits, fx["eval/step1/logits"], "logits", PUZZLE_TOL)


# ------------------------------------------------------------------ image HRM (the JAX notebook)

def image_name_map(layers: int = 2) -> dict[str, tuple[str, bool]]:
    """Flax parameter paths -> (our name, transpose?): Flax kernels are [in, out], torch [out, in]."""
    names = {"params/PatchEmbed_0/proj/kernel": ("patch_embed.weight", True),
             "params/PatchEmbed_0/cls": ("cls", False), "params/logits/kernel": ("head.weight", True)}
    for enc, ours in (("TransformerEncoder_0", "f_l"), ("TransformerEncoder_1", "f_h")):
        for i in range(layers):
            a, b = f"params/{enc}/TransformerEncoderBlock_{i}/", f"reasoner.{ours}.blocks.{i}."
            names |= {a + "SelfAttentionRoPE_0/qkv/kernel": (b + "attn.qkv.weight", True),
                      a + "SelfAttentionRoPE_0/proj/kernel": (b + "attn.out.weight", True),
                      a + "RMSNorm_0/scale": (b + "norm1.weight", False),
                      a + "RMSNorm_1/scale": (b + "norm2.weight", False),
                      a + "GEGLU_0/geglu/kernel": (b + "mlp.up.weight", True),
                      a + "GEGLU_0/out/kernel": (b + "mlp.down.weight", True)}
    return names


def _image_state(fx: dict[str, np.ndarray], prefix: str = "params/") -> dict[str, torch.Tensor]:
    out = {}
    for theirs, (ours, transpose) in image_name_map().items():
        w = torch.from_numpy(fx[prefix + theirs.removeprefix("params/")])
        out[ours] = w.T.contiguous() if transpose else w
    return out


def test_image_hrm_one_training_step_matches_authors() -> None:
    """Both segments' logits and losses, and every parameter after the full step (2 clipped AdamW updates)."""
    fx = _load("image-hrm-mnist-small.npz")
    torch.set_num_threads(1)
    exp = load_params(Path(__file__).resolve().parents[1] / "params.yaml").experiment("mnist-hrm")
    assert exp.mode == "faithful"
    model = build_model(exp.model, studies.shape(exp.dataset))
    state = _image_state(fx) | {"z0_h": torch.from_numpy(fx["z0H_template"]),
                                "z0_l": torch.from_numpy(fx["z0L_template"])}
    model.load_state_dict(state, strict=True)
    images = torch.from_numpy(fx["images"]).permute(0, 3, 1, 2).contiguous()   # NHWC -> NCHW
    labels = torch.from_numpy(fx["labels"])

    # Segment 1 with the initial weights, as a forward pass on its own.
    out = model.segment(model.initial_carry(len(images)), images)
    _close(out.logits, fx["seg1/logits"], "seg1 logits", IMAGE_TOL)
    _close(out.carry.z_h[:, 0], fx["seg1/zH_cls"], "seg1 zH cls", IMAGE_TOL)
    _close(out.carry.z_l[:, 0], fx["seg1/zL_cls"], "seg1 zL cls", IMAGE_TOL)

    # The production step: 2 segments, an update after each, schedule sized as the author code.
    r = exp.recipe
    optimizer = adamw(list(model.parameters()), r.lr, r.betas, r.eps, r.weight_decay)
    steps_per_epoch = 469   # ceil(60000 / 128), as the fixture's optimizer
    ctx = StepContext(exp.recipe, make_schedule(exp, steps_per_epoch), RunState("golden"),
                      autocast(torch.device("cpu"), "fp32"), post_update_acc=False)
    np.testing.assert_allclose([ctx.schedule(0), ctx.schedule(1)], fx["lr_per_update"], rtol=1e-6)
    loss, hits = hrm_image_step(model, images, labels, optimizer, ctx)
    _close(loss, fx["train_one_batch_mean_loss"], "mean loss", IMAGE_TOL)
    _close(hits / len(labels), fx["train_one_batch_mean_acc"], "mean acc", IMAGE_TOL)
    # The fixture keeps six of the 27 tensors after the step (README: "params_after_step/*").
    after = {k.removeprefix("params_after_step/"): v for k, v in fx.items() if k.startswith("params_after_step/")}
    assert len(after) == 6
    names = image_name_map()
    ours = dict(model.named_parameters())
    for theirs, want in after.items():
        name, transpose = names["params/" + theirs]
        got = ours[name].T if transpose else ours[name]
        _close(got, want, f"{name} after one step", IMAGE_TOL)
