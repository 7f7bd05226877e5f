"""Adaptive computation time for the puzzle HRM (REFERENCE II.3), as in the author code.

The carry persists across calls; rows that halted take the next batch's examples and restart
from the initial state. Training halts a row at M_max, or earlier (after a minimum number of
segments drawn with probability `halt_exploration`) when q_halt > q_continue (`halting:
q-learning`, HRM; the continue target comes from a second, no-grad pass on the new carry) or when
q_halt > 0 (`single-pass`, TRM: no second pass, no continue loss). Evaluation always runs M_max.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hrm.core.gpu import to_device
from hrm.models.hrm import Carry, Output, PuzzleHRM


@dataclass
class ActState:
    carry: Carry
    steps: torch.Tensor         # (B,) int: segments run on the current example
    halted: torch.Tensor        # (B,) bool: the row takes a new example at the next call
    inputs: torch.Tensor        # (B, S) current examples
    labels: torch.Tensor
    puzzle_ids: torch.Tensor


@dataclass
class ActOutput:
    out: Output
    target_q_continue: torch.Tensor | None   # (B,) training only


def initial_state(model: PuzzleHRM, inputs: torch.Tensor, labels: torch.Tensor,
                  puzzle_ids: torch.Tensor) -> ActState:
    b, s = inputs.shape
    return ActState(model.initial_carry(b, s), torch.zeros(b, dtype=torch.long, device=inputs.device),
                    torch.ones(b, dtype=torch.bool, device=inputs.device), inputs, labels, puzzle_ids)


def wants_halt(c: object, q_halt: torch.Tensor, q_continue: torch.Tensor) -> torch.Tensor:
    """The Q head's halting decision: q_halt > q_continue (Q-learning, HRM) or q_halt > 0 (single-pass, TRM)."""
    return q_halt > 0 if getattr(c, "halting", "q-learning") == "single-pass" else q_halt > q_continue


def _where(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, *([1] * (old.dim() - 1))), new, old)


def act_step(model: PuzzleHRM, state: ActState, inputs: torch.Tensor, labels: torch.Tensor,
             puzzle_ids: torch.Tensor, generator: torch.Generator | None = None,
             share: tuple[int, slice] | None = None) -> tuple[ActState, ActOutput]:
    """One segment for every row; rows halted last time are reset onto the new batch's examples.
    `share` = (global batch, these rows) when this process holds a slice of the batch (hrm.runtime.distributed):
    the exploration draws are made for the global batch and sliced, so every rank's generator stays in step."""
    c = model.c
    fresh = model.initial_carry(*inputs.shape)
    h = state.halted
    carry = Carry(_where(h, fresh.z_h, state.carry.z_h), _where(h, fresh.z_l, state.carry.z_l))
    data = (_where(h, inputs, state.inputs), _where(h, labels, state.labels), _where(h, puzzle_ids, state.puzzle_ids))
    steps = torch.where(h, torch.zeros_like(state.steps), state.steps)

    out = model.segment(carry, data[0], data[2])
    target = None
    with torch.no_grad():
        steps = steps + 1
        is_last = steps >= c.halt_max_steps
        halted = is_last
        if model.training and c.halt_max_steps > 1:
            halted = halted | wants_halt(c, out.q_halt, out.q_continue)
            # Drawn on the CPU generator (checkpointed, the same on every device), copied without a sync.
            n, rows = share or (len(steps), slice(None))
            explore = to_device(torch.rand(n, generator=generator)[rows], steps.device) < c.halt_exploration
            floor = to_device(torch.randint(2, c.halt_max_steps + 1, (n,), generator=generator)[rows], steps.device)
            halted = halted & (steps >= explore * floor)
            if c.halting == "q-learning":
                nxt = model.segment(out.carry, data[0], data[2])
                target = torch.sigmoid(torch.where(is_last, nxt.q_halt, torch.maximum(nxt.q_halt, nxt.q_continue)))
    new_state = ActState(out.carry.detach(), steps, halted, *data)
    return new_state, ActOutput(out, target)
