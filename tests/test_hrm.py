"""The HRM: exact counts, the one-step gradient, O(1) memory in depth, RoPE, batching, overfitting."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO

from hrm.models.hrm import ImageHRM
from hrm.models.layers import Rotary, apply_rope
from hrm.models.registry import ImageHRMConfig, PuzzleHRMConfig, Shape, build_model, count_params
from hrm.pipeline import studies
from hrm.pipeline.config import load_params

PARAMS = load_params(REPO / "params.yaml")


def tiny_image(**over: object) -> ImageHRMConfig:
    base = dict(hidden=16, heads=2, mlp_inner=32, mlp="geglu", norm_gain=True, norm_eps=1e-6, rope="interleaved",
                rope_base=10000.0, low_layers=1, high_layers=1, high_cycles=2, low_steps=2, kind="hrm-image",
                patch=4, train_segments=2, eval_segments=2)
    return ImageHRMConfig(**{**base, **over})


def tiny_puzzle(**over: object) -> PuzzleHRMConfig:
    base = dict(hidden=16, heads=2, mlp_inner=32, mlp="swiglu", norm_gain=False, norm_eps=1e-5, rope="half",
                rope_base=10000.0, low_layers=1, high_layers=1, high_cycles=2, low_steps=2, kind="hrm-puzzle",
                halt_max_steps=4, halt_exploration=0.0)
    return PuzzleHRMConfig(**{**base, **over})


def image_model(cfg: ImageHRMConfig, seed: int = 0) -> ImageHRM:
    model = ImageHRM(cfg, studies.shape("digits"))
    model.init_weights(torch.Generator().manual_seed(seed))
    return model


@pytest.mark.parametrize("name,expected", [("mnist-hrm", 1_053_056), ("cifar10-hrm", 3_552_576),
                                           ("cifar100-hrm", 3_569_856)])
def test_image_hrm_parameter_counts(name: str, expected: int) -> None:
    exp = PARAMS.experiment(name)
    model = build_model(exp.model, studies.shape(exp.dataset))
    assert sum(p.numel() for p in model.parameters()) == expected == count_params(exp.model, studies.shape(exp.dataset))
    # The fixed initial states are buffers, not parameters.
    assert {n for n, _ in model.named_buffers()} >= {"z0_h", "z0_l"}


@pytest.mark.parametrize("vocab,expected", [(11, 27_275_266), (12, 27_276_290), (6, 27_270_146)])
def test_puzzle_hrm_27m_counts(vocab: int, expected: int) -> None:
    cfg = PARAMS.models["hrm-27m"]
    model = build_model(cfg, Shape(classes=vocab, seq_len=81, puzzle_ids=1000))
    assert sum(p.numel() for p in model.parameters()) == expected == count_params(cfg, Shape(classes=vocab))
    assert model.puzzle.table.shape == (1000, 512)      # the puzzle-id table is not a parameter


def test_one_step_gradient_equals_hand_written_final_updates() -> None:
    model = image_model(tiny_image(high_cycles=2, low_steps=3))
    x_img = torch.randn(3, 1, 8, 8)
    carry = model.initial_carry(3)
    out = model.segment(carry, x_img)
    F.cross_entropy(out.logits, torch.tensor([0, 1, 2])).backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}

    # By hand: the no-grad loop (L, L, H, L, L), then only the final L and H with gradient.
    model.zero_grad()
    r = model.reasoner
    x = model.embed(x_img)
    with torch.no_grad():
        z_h, z_l = carry.z_h, carry.z_l
        for i in range(5):
            z_l = r.f_l(z_l, z_h + x, r.rotary)
            if i == 2:
                z_h = r.f_h(z_h, z_l, r.rotary)
    z_l = r.f_l(z_l.detach(), z_h.detach() + x, r.rotary)
    z_h = r.f_h(z_h.detach(), z_l, r.rotary)
    F.cross_entropy(model.head(z_h[:, 0]), torch.tensor([0, 1, 2])).backward()
    for n, p in model.named_parameters():
        assert torch.allclose(got[n], p.grad, atol=1e-6), n
    assert not out.carry.detach().z_h.requires_grad


def _saved_tensors(cfg: ImageHRMConfig) -> tuple[int, int]:
    model = image_model(cfg)
    count, numel = 0, 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal count, numel
        count, numel = count + 1, numel + t.numel()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model.segment(model.initial_carry(2), torch.randn(2, 1, 8, 8))
    out.logits.sum().backward()
    return count, numel


def test_memory_does_not_grow_with_recurrence_depth() -> None:
    shallow = _saved_tensors(tiny_image(high_cycles=2, low_steps=2))     # N*T = 4
    deep = _saved_tensors(tiny_image(high_cycles=4, low_steps=4))        # N*T = 16
    assert shallow == deep and shallow[0] > 0


@pytest.mark.parametrize("style", ["interleaved", "half"])
def test_rope_scores_depend_only_on_relative_position(style: str) -> None:
    torch.manual_seed(0)
    rot = Rotary(8, 64, 10000.0)
    q, k = torch.randn(8), torch.randn(8)

    def score(i: int, j: int) -> float:
        xq = torch.zeros(1, 64, 1, 8)
        xk = torch.zeros(1, 64, 1, 8)
        xq[0, i, 0], xk[0, j, 0] = q, k
        q_rot, k_rot = apply_rope(xq, rot.cos, rot.sin, style), apply_rope(xk, rot.cos, rot.sin, style)
        return float(q_rot[0, i, 0] @ k_rot[0, j, 0])

    assert score(3, 7) == pytest.approx(score(13, 17), abs=1e-4) == pytest.approx(score(40, 44), abs=1e-4)
    assert score(3, 7) != pytest.approx(score(3, 9), abs=1e-3)
    assert score(5, 5) == pytest.approx(float(q @ k), abs=1e-5)      # no rotation between equal positions


def test_batched_evaluation_equals_one_by_one() -> None:
    model = image_model(tiny_image()).eval()
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        batched = model(x)
        single = torch.cat([model(x[i:i + 1]) for i in range(5)])
    assert torch.allclose(batched, single, atol=1e-5)

    puzzle = build_model(tiny_puzzle(), Shape(classes=6, seq_len=10, puzzle_ids=3)).eval()
    puzzle.init_weights(torch.Generator().manual_seed(0))
    tokens, ids = torch.randint(0, 6, (4, 10)), torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        out = puzzle.segment(puzzle.initial_carry(4, 10), tokens, ids)
        one = [puzzle.segment(puzzle.initial_carry(1, 10), tokens[i:i + 1], ids[i:i + 1]) for i in range(4)]
    assert torch.allclose(out.logits, torch.cat([o.logits for o in one]), atol=1e-5)
    assert torch.allclose(out.q_halt, torch.cat([o.q_halt for o in one]), atol=1e-5)


def test_q_head_and_puzzle_table_start_as_specified() -> None:
    model = build_model(tiny_puzzle(), Shape(classes=6, seq_len=10, puzzle_ids=3))
    model.init_weights(torch.Generator().manual_seed(0))
    assert torch.all(model.q_head.weight == 0) and torch.all(model.q_head.bias == -5)
    assert torch.all(model.puzzle.table == 0)
    out = model.segment(model.initial_carry(2, 10), torch.zeros(2, 10, dtype=torch.long), torch.tensor([0, 1]))
    assert torch.allclose(out.q_halt, torch.full((2,), -5.0))


def test_tiny_image_hrm_overfits_a_batch() -> None:
    torch.manual_seed(0)
    model = image_model(tiny_image(hidden=32, mlp_inner=64))
    x, y = torch.randn(16, 1, 8, 8), torch.arange(16) % 10
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        carry = model.initial_carry(16)
        for _ in range(2):                                       # deep supervision, update per segment
            out = model.segment(carry, x)
            loss = F.cross_entropy(out.logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            carry = out.carry.detach()
    with torch.no_grad():
        assert (model(x).argmax(-1) == y).float().mean() == 1.0
