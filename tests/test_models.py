"""Models: exact parameter counts (formula == built model), JAX-style init, shapes; the LR schedule."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import REPO

from hrm.data.puzzles.sources import PUZZLES
from hrm.models.init import lecun_normal_, trunc_normal_
from hrm.models.optim import lr_at
from hrm.models.registry import build_model, count_params
from hrm.pipeline import studies
from hrm.pipeline.config import load_params

PARAMS = load_params(REPO / "params.yaml")


@pytest.mark.parametrize("name,expected", [("cifar10-cnn", 261_824), ("cifar100-cnn", 273_344)])
def test_paper_parameter_counts(name: str, expected: int) -> None:
    exp = PARAMS.experiment(name)
    model = build_model(exp.model, studies.shape(exp.dataset))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected
    assert count_params(exp.model, studies.shape(exp.dataset)) == expected


PUZZLE_EXPERIMENTS = sorted(n for n, e in PARAMS.experiments.items() if e.dataset in PUZZLES)


@pytest.mark.parametrize("name", PUZZLE_EXPERIMENTS)
def test_puzzle_formula_agrees_with_built_model(name: str) -> None:
    exp = PARAMS.experiment(name)
    spec = studies.shape(exp.dataset, puzzle_ids=3)
    model = build_model(exp.model, spec)
    assert count_params(exp.model, spec) == sum(p.numel() for p in model.parameters())
    if exp.model.hidden <= 64:                       # a forward pass only for the demo sizes
        model.init_weights(torch.Generator().manual_seed(0))
        out = model.segment(model.initial_carry(2, spec.seq_len), torch.ones(2, spec.seq_len, dtype=torch.long),
                            torch.tensor([1, 2]))
        assert out.logits.shape == (2, spec.seq_len, spec.classes)


@pytest.mark.parametrize("name", sorted(set(PARAMS.experiments) - set(PUZZLE_EXPERIMENTS)))
def test_formula_agrees_with_built_model(name: str) -> None:
    exp = PARAMS.experiment(name)
    spec = studies.shape(exp.dataset)
    model = build_model(exp.model, spec)
    assert count_params(exp.model, spec) == sum(p.numel() for p in model.parameters())
    model.init_weights(torch.Generator().manual_seed(0))
    out = model(torch.randn(3, *spec.image_shape))
    assert out.shape == (3, spec.classes)


def test_truncated_normal_matches_jax_convention() -> None:
    g = torch.Generator().manual_seed(0)
    w = trunc_normal_(torch.empty(400_000), 0.05, g)
    # The sample's std equals the target std (not 0.88 of it); values stop at 2 underlying sds.
    assert w.std().item() == pytest.approx(0.05, rel=0.01)
    assert w.abs().max().item() <= 2 * 0.05 / 0.87962566103423978 + 1e-7
    conv = torch.empty(64, 32, 3, 3)
    lecun_normal_(conv, g)
    assert conv.std().item() == pytest.approx(1 / math.sqrt(32 * 9), rel=0.03)


def test_init_is_seeded_and_bn_starts_at_identity() -> None:
    exp = PARAMS.experiment("cifar10-cnn")
    a, b = (build_model(exp.model, studies.shape("cifar10")) for _ in range(2))
    a.init_weights(torch.Generator().manual_seed(7))
    b.init_weights(torch.Generator().manual_seed(7))
    for (ka, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), ka
    bn = a.features[1]
    assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and bn.momentum == pytest.approx(0.1)


def test_schedule_warmup_cosine_floor() -> None:
    kw = dict(peak=3e-4, total=391 * 25, warmup=391, floor=0.2)
    assert lr_at(0, **kw) == 0.0                                   # optax starts its warmup at 0
    assert lr_at(195, **kw) == pytest.approx(3e-4 * 195 / 391)
    assert lr_at(391, **kw) == pytest.approx(3e-4)
    assert lr_at(391 * 25, **kw) == pytest.approx(6e-5)            # floor 0.2 * lr
    assert lr_at(10 ** 6, **kw) == pytest.approx(6e-5)             # stays at the floor
    values = [lr_at(s, **kw) for s in range(391, 391 * 25)]
    assert all(a >= b for a, b in zip(values, values[1:]))         # monotone after warmup
    # MNIST recipe: plain cosine to zero, no warmup (optax.cosine_decay_schedule).
    assert lr_at(0, peak=1e-3, total=100, warmup=0, floor=0.0) == pytest.approx(1e-3)
    assert lr_at(50, peak=1e-3, total=100, warmup=0, floor=0.0) == pytest.approx(5e-4)
    assert lr_at(100, peak=1e-3, total=100, warmup=0, floor=0.0) == pytest.approx(0.0, abs=1e-12)
