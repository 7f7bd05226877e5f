"""ACT halting, the Q targets, stable-max cross-entropy, Adam-atan2 and sign-SGD, against formulas."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from test_hrm import tiny_puzzle

from hrm.core.losses import IGNORE_LABEL, act_loss, stablemax_cross_entropy
from hrm.models.act import act_step, initial_state
from hrm.models.hrm import Carry, Output
from hrm.models.optim import AdamAtan2, sign_sgd_rows
from hrm.models.registry import Shape, build_model


class ScriptedModel:
    """A stand-in HRM whose Q logits come from a script: call k returns q[k] for every row."""

    def __init__(self, q_halt: list[list[float]], q_cont: list[list[float]], max_steps: int, training: bool):
        self.q_halt, self.q_cont = q_halt, q_cont
        self.c = SimpleNamespace(halt_max_steps=max_steps, halt_exploration=0.0, halting="q-learning")
        self.training, self.calls = training, 0

    def initial_carry(self, b: int, s: int) -> Carry:
        return Carry(torch.zeros(b, s + 1, 2), torch.zeros(b, s + 1, 2))

    def segment(self, carry: Carry, inputs: torch.Tensor, ids: torch.Tensor) -> Output:
        k = self.calls
        self.calls += 1
        return Output(torch.zeros(len(inputs), inputs.shape[1], 3), Carry(carry.z_h + 1, carry.z_l + 1),
                      torch.tensor(self.q_halt[k]), torch.tensor(self.q_cont[k]))


def _batch(b: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.zeros(b, 3, dtype=torch.long), torch.zeros(b, 3, dtype=torch.long), torch.zeros(b, dtype=torch.long)


def test_evaluation_always_runs_m_max_segments() -> None:
    model = ScriptedModel([[9.0, 9.0]] * 10, [[-9.0, -9.0]] * 10, max_steps=4, training=False)
    state = initial_state(model, *_batch())
    halts = []
    for _ in range(4):
        state, _ = act_step(model, state, *_batch())
        halts.append(state.halted.tolist())
    assert halts == [[False, False]] * 3 + [[True, True]]       # q_halt > q_continue is ignored


def test_training_halts_exactly_when_q_halt_wins_or_at_m_max() -> None:
    # Training calls segment twice per step (the second pass gives the continue target).
    # Row 0 wants to halt at its 2nd segment; row 1 never does and stops at M_max = 3.
    q_halt = [[-1.0, -1.0], [0.0, 0.0], [2.0, -1.0], [0.0, 0.0], [-1.0, -1.0], [0.0, 0.0]]
    q_cont = [[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
    model = ScriptedModel(q_halt, q_cont, max_steps=3, training=True)
    state = initial_state(model, *_batch())
    state, _ = act_step(model, state, *_batch())
    assert state.halted.tolist() == [False, False] and state.steps.tolist() == [1, 1]
    state, _ = act_step(model, state, *_batch())
    assert state.halted.tolist() == [True, False] and state.steps.tolist() == [2, 2]
    state, _ = act_step(model, state, *_batch())
    assert state.steps.tolist() == [1, 3]                          # row 0 restarted on a new example
    assert state.halted.tolist() == [False, True]


def test_continue_target_formula() -> None:
    # Second (no-grad) pass gives next q_halt = [0.5, 2.0], next q_continue = [1.5, -1.0].
    model = ScriptedModel([[-3.0, -3.0], [0.5, 2.0]], [[3.0, 3.0], [1.5, -1.0]], max_steps=2, training=True)
    state = initial_state(model, *_batch())
    _, out = act_step(model, state, *_batch())
    sig = lambda v: 1 / (1 + math.exp(-v))                        # noqa: E731
    # Not the last step: sigmoid(max(next q_halt, next q_continue)).
    assert out.target_q_continue.tolist() == pytest.approx([sig(1.5), sig(2.0)])
    model = ScriptedModel([[-3.0, -3.0], [0.5, 2.0]], [[3.0, 3.0], [1.5, -1.0]], max_steps=1, training=True)
    _, out = act_step(model, initial_state(model, *_batch()), *_batch())
    assert out.target_q_continue is None                           # M_max = 1: nothing to learn


def test_stablemax_cross_entropy_by_hand() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.0]])
    s = [3.0, 0.5, 1.0]                                            # x+1 for x >= 0, 1/(1-x) below
    got = stablemax_cross_entropy(logits, torch.tensor([0]))
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(-math.log(3.0 / sum(s)))
    assert stablemax_cross_entropy(logits, torch.tensor([IGNORE_LABEL])).item() == 0.0


def test_act_loss_composition() -> None:
    logits = torch.tensor([[[2.0, 0.0], [0.0, 2.0]], [[2.0, 0.0], [2.0, 0.0]]])
    labels = torch.tensor([[0, 1], [0, IGNORE_LABEL]])
    q_halt, q_cont, target = torch.tensor([0.3, -0.2]), torch.tensor([0.1, 0.4]), torch.tensor([0.6, 0.2])
    loss = act_loss(logits, labels, q_halt, q_cont, target)
    ce = stablemax_cross_entropy(logits, labels)
    lm = ce[0].sum() / 2 + ce[1].sum() / 1                         # per-sequence mean over valid tokens
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    halt = bce(q_halt, torch.tensor([1.0, 1.0]), reduction="sum")  # both sequences fully correct
    cont = bce(q_cont, target, reduction="sum")
    assert loss.seq_correct.tolist() == [True, True]
    assert loss.total.item() == pytest.approx((lm + 0.5 * (halt + cont)).item())


@pytest.mark.parametrize("impl", ["foreach", "loop"])
def test_adam_atan2_matches_its_formula(impl: str) -> None:
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    opt = AdamAtan2([p], lr=0.1, betas=(0.9, 0.95), weight_decay=0.5, impl=impl)
    grads = [torch.tensor([0.5, -1.0, 0.0]), torch.tensor([-0.2, 0.3, 1e-8])]
    w, m, v = p.detach().clone(), torch.zeros(3), torch.zeros(3)
    for t, g in enumerate(grads, start=1):
        p.grad = g.clone()
        opt.step()
        w = w * (1 - 0.1 * 0.5)
        m, v = 0.9 * m + 0.1 * g, 0.95 * v + 0.05 * g * g
        w = w - (0.1 / (1 - 0.9 ** t)) * torch.atan2(m, v.sqrt() / math.sqrt(1 - 0.95 ** t))
        assert torch.allclose(p.detach(), w, atol=1e-6), t


def test_sign_sgd_updates_touched_rows_only() -> None:
    table = torch.ones(4, 2)
    ids = torch.tensor([1, 3, 1])
    grad = torch.tensor([[1.0, -2.0], [-1.0, 0.0], [-3.0, 1.0]])   # row 1 sums to (-2, -1)
    sign_sgd_rows(table, ids, grad, lr=0.1, wd=0.5)
    decayed = 1 * (1 - 0.1 * 0.5)
    assert table[0].tolist() == [1.0, 1.0] and table[2].tolist() == [1.0, 1.0]
    assert table[1].tolist() == pytest.approx([decayed + 0.1, decayed + 0.1])
    assert table[3].tolist() == pytest.approx([decayed + 0.1, decayed])   # sign(0) = 0


def test_tiny_puzzle_hrm_learns_a_tiny_batch_with_act() -> None:
    torch.manual_seed(0)
    cfg = tiny_puzzle(hidden=32, mlp_inner=64, halt_max_steps=2, halt_exploration=0.1)
    model = build_model(cfg, Shape(classes=5, seq_len=6, puzzle_ids=4))
    model.init_weights(torch.Generator().manual_seed(0))
    inputs = torch.randint(1, 5, (8, 6))
    labels = (inputs + 1) % 5                                      # a per-token mapping to learn
    ids = torch.arange(8) % 4
    opt = AdamAtan2(list(model.parameters()), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.0)
    state, gen = initial_state(model, inputs, labels, ids), torch.Generator().manual_seed(0)
    model.train()
    for _ in range(300):
        state, out = act_step(model, state, inputs, labels, ids, gen)
        loss = act_loss(out.out.logits, state.labels, out.out.q_halt, out.out.q_continue, out.target_q_continue)
        opt.zero_grad()
        (loss.total / len(inputs)).backward()
        opt.step()
        touched = out.out.puzzle_rows
        sign_sgd_rows(model.puzzle.table, touched.ids, touched.rows.grad, lr=1e-3, wd=0.0)
    assert model.puzzle.table.abs().sum() > 0                      # the puzzle embeddings were trained
    model.eval()
    with torch.no_grad():
        state = initial_state(model, inputs, labels, ids)
        for _ in range(cfg.halt_max_steps):
            state, out = act_step(model, state, inputs, labels, ids)
    assert (out.out.logits.argmax(-1) == labels).all()
