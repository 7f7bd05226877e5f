"""The ablation switches (REFERENCE II.5-II.6, I.7): each changes the model or the step as documented,
and leaves the paper's setting, its parameter count and its params hash, as they were."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import real_params
from test_analyze import TINY_IMAGE_HRM

from hrm.core.errors import ConfigError
from hrm.core.fields import parse_section
from hrm.data.puzzles.sources import PUZZLES
from hrm.models.hrm import Carry
from hrm.models.registry import (
    ImageHRMConfig,
    PuzzleTransformerConfig,
    Shape,
    build_model,
    count_params,
    effective_depth,
)
from hrm.pipeline.config import ImageRecipe, load_params, parse_params
from hrm.train.image import crop_flip, hrm_image_step

DIGITS = Shape(classes=10, image_shape=(1, 8, 8))


def _image(**switches: object) -> torch.nn.Module:
    cfg = parse_section(ImageHRMConfig, {**TINY_IMAGE_HRM, "patch": 2, **switches}, "models.t")
    model = build_model(cfg, DIGITS)
    model.init_weights(torch.Generator().manual_seed(0))
    return model


def test_switches_default_to_the_paper_and_count_their_parameters() -> None:
    base = _image()
    n = sum(p.numel() for p in base.parameters())
    learned = _image(position="learned")
    assert sum(p.numel() for p in learned.parameters()) == n + 17 * 16            # (1 + 16 patches) x D
    conv = _image(stem="conv")                                                   # 2 = 2^1: one stride-2 conv
    assert sum(p.numel() for p in conv.parameters()) == n - 4 * 16 + 9 * 1 * 8 + 8 * 16
    for model, cfg in ((learned, learned.c), (conv, conv.c)):
        assert count_params(cfg, DIGITS) == sum(p.numel() for p in model.parameters())
    # The paper's model draws the same initial weights as before the switches existed.
    assert all(torch.equal(a, b) for a, b in zip(base.state_dict().values(), _image().state_dict().values()))
    with pytest.raises(ConfigError, match=r"models.t.stem: 'conv' .* power of 2; got patch 3"):
        parse_section(ImageHRMConfig, {**TINY_IMAGE_HRM, "patch": 3, "stem": "conv"}, "models.t")


def test_learned_positions_replace_rope() -> None:
    """Without RoPE, attention cannot tell token order: permuting the patch tokens of the input (after
    the embedding, where the position table would have added order) permutes z_H's rows."""
    model = _image(position="learned").eval()
    x = torch.randn(2, 17, 16)
    shuffled = 1 + torch.randperm(16, generator=torch.Generator().manual_seed(1))
    perm = torch.cat([torch.zeros(1, dtype=torch.long), shuffled])             # the CLS token stays first
    carry = model.initial_carry(2)
    carry = Carry(carry.z_h[:, :1].expand(2, 17, 16), carry.z_l[:, :1].expand(2, 17, 16))   # order-free start
    with torch.no_grad():
        a = model.reasoner(carry, x).z_h
        b = model.reasoner(carry, x[:, perm]).z_h
    assert torch.allclose(a[:, perm], b, atol=1e-5)
    rope = _image().eval()                                                        # with RoPE the rows differ
    with torch.no_grad():
        assert not torch.allclose(rope.reasoner(carry, x).z_h[:, perm], rope.reasoner(carry, x[:, perm]).z_h,
                                  atol=1e-3)
    images = torch.randn(2, 1, 8, 8)
    model.segment(model.initial_carry(2), images).logits.sum().backward()
    assert model.position.grad is not None and model.position.grad.abs().sum() > 0


def test_no_deep_supervision_makes_one_update_after_the_last_segment() -> None:
    from hrm.runtime.speed import autocast
    from hrm.train.image import StepContext

    recipe = ImageRecipe(epochs=1, batch_size=4, eval_batch_size=4, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.999),
                         eps=1e-8, grad_clip=0.0, warmup_epochs=0, lr_floor=0.0, label_smoothing=0.0,
                         train_acc="pre_update")

    class State:
        step = 0

    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    for ds, updates in ((True, 3), (False, 1)):
        model = _image(deep_supervision=ds, train_segments=3)
        state = State()
        ctx = StepContext(recipe, lambda s: 1e-3, state, autocast(torch.device("cpu"), "fp32"), False)   # type: ignore[arg-type]
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        hrm_image_step(model, x, y, opt, ctx)
        assert state.step == updates
    # Without deep supervision the loss is that of the third segment run from the initial state.
    model = _image(deep_supervision=False, train_segments=3)
    with torch.no_grad():
        carry = model.initial_carry(4)
        for _ in range(3):
            out = model.segment(carry, x)
            carry = out.carry
        expected = torch.nn.functional.cross_entropy(out.logits, y)
    state = State()
    ctx = StepContext(recipe, lambda s: 0.0, state, autocast(torch.device("cpu"), "fp32"), False)   # type: ignore[arg-type]
    loss, _ = hrm_image_step(model, x, y, torch.optim.SGD(model.parameters(), lr=0.0), ctx)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_recurrent_transformer_reapplies_one_stack() -> None:
    cfg = PuzzleTransformerConfig(kind="transformer-puzzle", hidden=16, heads=2, mlp_inner=32, mlp="swiglu",
                                  norm_gain=False, norm_eps=1e-5, rope="half", rope_base=10000, layers=2, repeats=3)
    shape = Shape(classes=6, seq_len=9, puzzle_ids=2)
    model = build_model(cfg, shape)
    plain = build_model(dataclasses.replace(cfg, repeats=1), shape)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in plain.parameters()) \
        == count_params(cfg, shape)                                     # shared weights: no new parameters
    assert effective_depth(cfg) == 6
    model.init_weights(torch.Generator().manual_seed(0))
    x = torch.randn(2, 10, 16)
    z = torch.zeros_like(x)
    for _ in range(3):
        z = model.reasoner.stack(z, x, model.reasoner.rotary)
    assert torch.allclose(model.reasoner(Carry(z, z), x).z_h, z)
    z.sum().backward()                                                   # full gradient through every repeat
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad and p.dim() > 1
               and p is not model.tokens.weight and p is not model.lm_head.weight and p is not model.q_head.weight)


def test_crop_flip_moves_pixels_without_changing_them() -> None:
    x = torch.randint(1, 255, (16, 3, 8, 8), dtype=torch.uint8)
    out = crop_flip(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    flips = 0
    for i in range(len(x)):        # each output is one window of the padded image, flipped or not
        windows = [(f, padded[i, :, dy:dy + 8, dx:dx + 8]) for dy in range(3) for dx in range(3) for f in (0, 1)]
        match = [f for f, w in windows if torch.equal(out[i], w.flip(-1) if f else w)]
        assert match
        flips += match[0]
    assert 0 < flips < 16                                              # p = 0.5 over 16 images
    assert torch.equal(out, crop_flip(x, torch.Generator().manual_seed(0)))    # seeded: resumes exactly
    crops = crop_flip(x, torch.Generator().manual_seed(0), flip=False)         # the same crops, never flipped
    assert all(torch.equal(crops[i], out[i]) or torch.equal(crops[i].flip(-1), out[i]) for i in range(len(x)))
    assert not torch.equal(crops, out)


def test_paper_runs_keep_their_hashes_and_ablations_are_experiments() -> None:
    params = load_params()
    exps = params.experiments
    assert {n for n, e in exps.items() if e.group == "analysis" and e.ablations} >= {
        "depth-hrm-12", "supervision-hrm-mmax1", "arc-aug100-hrm", "image-digits-hrm-conv-stem"}
    assert {PUZZLES[exps[f"arc-aug{n}-hrm"].dataset].augmentations for n in (10, 100, 1000)} == {10, 100, 1000}
    raw = real_params()
    raw["models"]["hrm-mnist"]["position"] = "rope"                     # writing the default changes nothing
    assert parse_params(raw, params.path).experiment("mnist-hrm").params_hash() == \
        params.experiment("mnist-hrm").params_hash()
    raw["recipes"]["mnist-hrm"]["augment"] = "crop-flip"
    assert parse_params(raw, params.path).experiment("mnist-hrm").params_hash() != \
        params.experiment("mnist-hrm").params_hash()


def test_every_ablation_family_has_its_table_row_and_its_paper_claim() -> None:
    """A family is a name in params validation, a row of the report's FAMILIES and the paper's claim."""
    from hrm.pipeline.config import ABLATIONS
    from hrm.report.ablations import FAMILIES
    from hrm.report.paper import CLAIMS

    assert list(FAMILIES) == list(ABLATIONS) and set(CLAIMS) == set(ABLATIONS)
