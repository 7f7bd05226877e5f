"""TRM (REFERENCE V, issue 16): parameter counts, the design switches shared with HRM, EMA, learning.

The golden comparison with the authors' code is in test_golden.py; here each switch is checked to
change what it says it changes, on tiny models on the CPU.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import REPO, tiny_params, write_params

from hrm import cli
from hrm.core import checkpoint, paths
from hrm.core.errors import ConfigError
from hrm.core.losses import act_loss
from hrm.data.puzzles.sources import PUZZLES, Generated, PuzzleSet
from hrm.models.act import act_step, initial_state
from hrm.models.registry import PuzzleHRMConfig, Shape, TRMConfig, build_model, count_params
from hrm.pipeline.config import load_params
from hrm.train.ema import EMA

REFERENCE_COUNTS = {"sudoku-extreme-1k-trm-att": 6_828_034, "arc1-trm-att": 6_829_058,
                    "sudoku-extreme-1k-trm-mlp": 5_028_866, "sudoku-extreme-1k-hrm": 27_275_266}
BLOCK = dict(hidden=32, heads=2, mlp_inner=64, mlp="swiglu", norm_gain=False, norm_eps=1e-5, rope="half",
             rope_base=10000.0)
TINY_TRM = TRMConfig(kind="trm-puzzle", **BLOCK, layers=1, recursions=3, latent_steps=2, mixer="attention",
                     puzzle_prefix=4, halt_max_steps=3, halt_exploration=0.0)
TINY_HRM = PuzzleHRMConfig(kind="hrm-puzzle", **BLOCK, low_layers=1, high_layers=1, high_cycles=3, low_steps=2,
                           halt_max_steps=3, halt_exploration=0.0)
SHAPE = Shape(classes=6, seq_len=9, puzzle_ids=2)


def _model(c: TRMConfig | PuzzleHRMConfig, seed: int = 0) -> torch.nn.Module:
    model = build_model(c, SHAPE)
    model.init_weights(torch.Generator().manual_seed(seed))
    return model


def _batch(b: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return (torch.randint(0, 6, (b, 9), generator=g), torch.randint(1, 6, (b, 9), generator=g),
            torch.zeros(b, dtype=torch.long))


@pytest.mark.parametrize("name", REFERENCE_COUNTS)
def test_parameter_counts_are_reference_v1s(name: str) -> None:
    from hrm.pipeline import studies

    exp = load_params(REPO / "params.yaml").experiment(name)
    shape = studies.shape(exp.dataset)
    assert count_params(exp.model, shape) == REFERENCE_COUNTS[name]
    model = build_model(exp.model, shape)
    assert sum(p.numel() for p in model.parameters()) == REFERENCE_COUNTS[name]


def _graded_calls(model: torch.nn.Module) -> list[tuple[str, bool]]:
    """(network, gradient on?) of every network call of one segment, in order."""
    calls: list[tuple[str, bool]] = []
    r = model.reasoner
    for name in ("f_l", "f_h"):
        net = getattr(r, name)
        if net is not None:
            net.register_forward_hook(lambda m, a, o, name=name: calls.append((name, o.requires_grad)))
    x, _, pid = _batch()
    model.train()
    model.segment(model.initial_carry(*x.shape), x, pid)
    return calls


@pytest.mark.parametrize(("gradient", "graded"), [("one-step", 2), ("last-cycle", 3), ("bptt", 9)])
def test_gradient_switch_sets_which_calls_are_differentiated(gradient: str, graded: int) -> None:
    """T = 3 recursions of n = 2 latent updates and one answer update: 9 calls of the one network;
    one-step differentiates the last 2, TRM's rule the last n + 1 = 3, bptt all."""
    calls = _graded_calls(_model(replace(TINY_TRM, gradient=gradient)))
    assert [n for n, _ in calls] == ["f_l"] * 9                 # one shared network does every update
    assert [g for _, g in calls] == [False] * (9 - graded) + [True] * graded


def test_gradient_switch_applies_to_hrm_and_changes_the_gradients() -> None:
    calls = _graded_calls(_model(replace(TINY_HRM, gradient="last-cycle")))
    assert calls[-3:] == [("f_l", True), ("f_l", True), ("f_h", True)] and not any(g for _, g in calls[:-3])
    grads = {}
    for gradient in ("one-step", "last-cycle"):
        model = _model(replace(TINY_TRM, gradient=gradient))
        x, y, pid = _batch()
        out = model.segment(model.initial_carry(*x.shape), x, pid)
        act_loss(out.logits, y, out.q_halt, out.q_continue, None).total.backward()
        grads[gradient] = model.tokens.weight.grad.clone()
    assert not torch.allclose(grads["one-step"], grads["last-cycle"])


def test_networks_switch_shares_or_separates_the_weights() -> None:
    shared, separate = _model(TINY_TRM), _model(replace(TINY_TRM, networks="separate"))
    assert shared.reasoner.f_h is None and separate.reasoner.f_h is not None
    block = sum(p.numel() for p in separate.reasoner.f_h.parameters())
    n_shared, n_separate = (sum(p.numel() for p in m.parameters()) for m in (shared, separate))
    assert n_separate - n_shared == block
    assert (count_params(TINY_TRM, SHAPE), count_params(replace(TINY_TRM, networks="separate"), SHAPE)) == \
        (n_shared, n_separate)
    assert [n for n, _ in _graded_calls(separate)][-3:] == ["f_l", "f_l", "f_h"]
    hrm_shared = _model(replace(TINY_HRM, networks="shared"))
    assert hrm_shared.reasoner.f_h is None
    with pytest.raises(ConfigError, match="low_layers"):
        replace(TINY_HRM, networks="shared", high_layers=2)


@pytest.mark.parametrize("halting", ["single-pass", "q-learning"])
def test_halting_rule(halting: str) -> None:
    """q_halt = 3 > 0 but < q_continue = 6: single-pass halts every row at step 1, Q-learning none."""
    model = _model(replace(TINY_TRM, halting=halting))
    with torch.no_grad():
        model.q_head.bias.copy_(torch.tensor([3.0, 6.0]))
    model.train()
    x, y, pid = _batch()
    state, out = act_step(model, initial_state(model, x, y, pid), x, y, pid, torch.Generator().manual_seed(0))
    loss = act_loss(out.out.logits, state.labels, out.out.q_halt, out.out.q_continue, out.target_q_continue)
    if halting == "single-pass":
        assert state.halted.all() and out.target_q_continue is None and float(loss.q_continue) == 0
    else:
        assert not state.halted.any() and out.target_q_continue is not None and float(loss.q_continue.detach()) > 0
    model.eval()                                   # evaluation ignores the Q head: always M_max
    state, _ = act_step(model, initial_state(model, x, y, pid), x, y, pid)
    assert not state.halted.any()


def test_ema_update_apply_and_state() -> None:
    model = _model(TINY_TRM)
    ema = EMA(model, 0.9)
    assert "puzzle.table" not in ema.names and "tokens.weight" in ema.names     # a buffer: excluded
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update()
    with ema.applied():
        for n, p in model.named_parameters():
            torch.testing.assert_close(p, 0.9 * before[n] + 0.1 * (before[n] + 1.0))
    for n, p in model.named_parameters():                     # restored
        torch.testing.assert_close(p, before[n] + 1.0)
    other = EMA(_model(TINY_TRM, seed=5), 0.9)
    other.load(ema.state())
    assert all(torch.equal(a, b) for a, b in zip(other.shadow, ema.shadow))
    with pytest.raises(ValueError, match="moving average"):
        other.load({})


# ------------------------------------------------------------------ training runs on a tiny generated Sudoku

TRM_MODEL = {"kind": "trm-puzzle", "hidden": 32, "heads": 2, "mlp_inner": 64, "mlp": "swiglu", "norm_gain": False,
             "norm_eps": 1e-5, "rope": "half", "rope_base": 10000, "layers": 2, "recursions": 2, "latent_steps": 2,
             "mixer": "attention", "puzzle_prefix": 4, "halt_max_steps": 3, "halt_exploration": 0.1}
TRM_RECIPE = {"kind": "puzzle", "epochs": 150, "batch_size": 8, "eval_batch_size": 8, "eval_interval": 75,
              "lr": 3e-3, "puzzle_emb_lr": 1e-2, "weight_decay": 0.0, "puzzle_emb_weight_decay": 0.0,
              "betas": [0.9, 0.95], "warmup_steps": 5, "scheme": "carry", "eval_halt_steps": [1, 2, 3],
              "max_steps": 0, "ema": 0.9}


@pytest.fixture
def trm_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setitem(PUZZLES, "sudoku-tiny", PuzzleSet("sudoku-tiny", "sudoku", Generated(8, 4, seed=3),
                                                          augmentations=0))
    raw = tiny_params(**{"sudoku-trm": {"group": "demo", "dataset": "sudoku-tiny", "model": "tiny-trm",
                                        "recipe": "tiny-trm", "seeds": [0]},
                         "sudoku-trm-short": {"group": "demo", "dataset": "sudoku-tiny", "model": "tiny-trm",
                                              "recipe": "tiny-trm-short", "seeds": [0]}})
    raw["models"]["tiny-trm"] = TRM_MODEL
    raw["recipes"]["tiny-trm"] = TRM_RECIPE
    raw["recipes"]["tiny-trm-short"] = {**TRM_RECIPE, "epochs": 12, "eval_interval": 6}
    write_params(project, raw)
    assert cli.main(["download", "sudoku-tiny"]) == 0
    assert cli.main(["build", "sudoku-tiny"]) == 0
    return project


def test_tiny_trm_learns_generated_sudoku(trm_project: Path) -> None:
    assert cli.main(["train", "sudoku-trm", "--seed", "0"]) == 0
    steps = [float(r.split(",")[1]) for r in paths.steps_file("demo", "sudoku-trm", 0).read_text().split()[1:]]
    assert len(steps) == 150
    assert sum(steps[-15:]) < 0.6 * sum(steps[:15])
    metrics = json.loads(paths.metrics_file("demo", "sudoku-trm", 0).read_text())
    assert metrics["weights"] == "moving average, rate 0.9" and metrics["params"] == count_params(
        load_params().experiment("sudoku-trm").model, Shape(classes=11, seq_len=16, puzzle_ids=1))
    assert cli.main(["evaluate", "sudoku-trm", "--seed", "0"]) == 0
    result = json.loads(paths.eval_file("demo", "sudoku-trm", 0).read_text())
    assert result["by_segments"]["3"]["token_acc"] > 0.3             # chance is 1/9


class Killed(Exception):
    pass


def test_killed_trm_run_resumes_with_its_moving_average(trm_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """model.pt holds the average; a run killed after its first checkpoint ends with the same one."""
    params = load_params()
    cli.main(["train", "sudoku-trm-short", "--seed", "0"])
    model_file = paths.model_file("demo", "sudoku-trm-short", 0)
    straight = torch.load(model_file, weights_only=True)["state_dict"]
    model_file.unlink()
    real_save = checkpoint.save

    def save_then_die(*args: object, **kwargs: object) -> None:
        real_save(*args, **kwargs)
        raise Killed

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    from hrm.train import puzzle

    with pytest.raises(Killed):
        puzzle.train(params, "sudoku-trm-short", 0)
    saved = checkpoint.read(paths.checkpoint_file("demo", "sudoku-trm-short", 0))
    assert any(k.startswith("ema/") for k in saved["extra"])
    monkeypatch.setattr(checkpoint, "save", real_save)
    puzzle.train(params, "sudoku-trm-short", 0)
    resumed = torch.load(model_file, weights_only=True)["state_dict"]
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_switch_labels_count_ema_as_on_or_off_per_model() -> None:
    """The analyses table names each run's change from its own paper setting: EMA is TRM's, not HRM's."""
    from hrm.report.ablations import changes

    params = load_params(REPO / "params.yaml")
    assert {name: changes(params.experiment(name)) for name in (
        "trm-switch-base", "trm-switch-no-ema", "trm-switch-separate", "hrm-switch-base", "hrm-switch-ema",
        "hrm-switch-single-pass")} == {
        "trm-switch-base": "", "trm-switch-no-ema": "ema: off", "trm-switch-separate": "networks: separate",
        "hrm-switch-base": "", "hrm-switch-ema": "ema: 0.99", "hrm-switch-single-pass": "halting: single-pass"}
