"""Losses of the puzzle HRM (REFERENCE II.3): stable-max cross-entropy and the ACT loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE_LABEL = -100


def stablemax(x: torch.Tensor) -> torch.Tensor:
    """s(x) = x + 1 for x >= 0, 1 / (1 - x) otherwise: positive and growing only linearly."""
    # The negative branch sees min(x, 0): at x = 1 it would be 1/0, and torch.where's backward
    # multiplies that branch's infinite gradient by 0, which is NaN.
    return torch.where(x >= 0, x + 1, 1 / (1 - x.clamp(max=0)))


def stablemax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                            ignore_index: int = IGNORE_LABEL) -> torch.Tensor:
    """-log(s(x_label) / sum_j s(x_j)) per position, in float64; 0 where the label is ignored."""
    s = stablemax(logits.double())
    log_probs = torch.log(s / s.sum(-1, keepdim=True))
    valid = labels != ignore_index
    picked = torch.gather(log_probs, -1, torch.where(valid, labels, 0).long().unsqueeze(-1)).squeeze(-1)
    return -torch.where(valid, picked, torch.zeros_like(picked))


@dataclass
class ActLoss:
    total: torch.Tensor          # LM + 0.5 * (BCE_halt + BCE_continue), summed over the batch
    lm: torch.Tensor
    q_halt: torch.Tensor
    q_continue: torch.Tensor
    seq_correct: torch.Tensor    # (B,) every supervised token right


def act_loss(logits: torch.Tensor, labels: torch.Tensor, q_halt: torch.Tensor, q_continue: torch.Tensor,
             target_q_continue: torch.Tensor | None) -> ActLoss:
    """Per-sequence mean over valid tokens, summed over the batch (the caller divides by batch size)."""
    valid = labels != IGNORE_LABEL
    counts = valid.sum(-1)
    correct = valid & (logits.argmax(-1) == labels)
    seq_correct = correct.sum(-1) == counts
    lm = (stablemax_cross_entropy(logits, labels) / counts.clamp_min(1).unsqueeze(-1)).sum()
    bce_halt = F.binary_cross_entropy_with_logits(q_halt, seq_correct.to(q_halt.dtype), reduction="sum")
    bce_cont = (F.binary_cross_entropy_with_logits(q_continue, target_q_continue, reduction="sum")
                if target_q_continue is not None else torch.zeros((), device=q_halt.device))
    return ActLoss(lm + 0.5 * (bce_halt + bce_cont), lm, bce_halt, bce_cont, seq_correct)
