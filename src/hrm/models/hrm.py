"""The Hierarchical Reasoning Model: one core, two front ends (REFERENCE I.3 image, II.2 puzzle).

Per segment: a no-grad loop of N*T - 1 low steps (a high step after every T-th), then exactly one
low and one high update with gradient (the one-step gradient). The carry is detached between
segments and starts from fixed random states that are buffers, not parameters. With
`gradient: bptt` (an ablation) all N*T updates are differentiated instead.

`carry_dtype` (set by `hrm.runtime.speed.set_precision`) is None for a carry in the inputs' dtype (fp32),
or bf16 for the HRM authors' numerics, where the initial states and the injection are cast too.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hrm.models.init import trunc_normal_
from hrm.models.layers import Rotary, Stack, init_linears
from hrm.models.registry import ImageHRMConfig, PuzzleModelConfig, PuzzleTransformerConfig, Recurrent, Shape, glu_inner


@dataclass
class Carry:
    z_h: torch.Tensor   # (B, S, D)
    z_l: torch.Tensor   # (B, S, D)

    def detach(self) -> Carry:
        return Carry(self.z_h.detach(), self.z_l.detach())


@dataclass
class PuzzleRows:
    """The puzzle-embedding rows a training forward used: a leaf that receives their gradient."""

    ids: torch.Tensor       # (B,) puzzle id of each batch row
    rows: torch.Tensor      # (B, D) copy of table[ids], requires_grad


@dataclass
class Output:
    logits: torch.Tensor                    # (B, classes) image; (B, S_tokens, vocab) puzzle
    carry: Carry
    q_halt: torch.Tensor | None = None      # (B,) puzzle only
    q_continue: torch.Tensor | None = None
    puzzle_rows: PuzzleRows | None = None   # puzzle training only: for the sign-SGD update


def _as(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """`t` in the carry dtype (None: as it is)."""
    return t if dtype is None else t.to(dtype)


class Reasoner(nn.Module):
    """f_L and f_H with input injection by addition: L on z_L + z_H + x, H on z_H + z_L.

    N cycles of T low steps and one high step. `gradient` says how many of the last low steps (with
    the high steps among them) are differentiated: one (HRM's one-step gradient), T (the last cycle:
    TRM's rule) or all (bptt); the rest run without gradient. With `networks: shared` one network
    does both updates (TRM, where N = T recursions and T = n latent steps).
    """

    def __init__(self, c: Recurrent, seq_len: int) -> None:
        super().__init__()
        self.c = c
        rope = None if getattr(c, "position", "rope") == "learned" else c.rope
        mixer = getattr(c, "mixer", "attention")
        tokens = seq_len if mixer == "mlp" else 0
        block = dict(dim=c.hidden, heads=c.heads, inner=c.mlp_inner, mlp=c.mlp, rope=rope,
                     eps=c.norm_eps, gain=c.norm_gain, tokens=tokens, token_inner=glu_inner(tokens) if tokens else 0)
        self.f_l = Stack(c.low_layers, **block)
        # Shared: no second module, so the weights appear once in the state dict and the optimizer.
        self.f_h = None if c.networks == "shared" else Stack(c.high_layers, **block)
        self.rotary = Rotary(c.hidden // c.heads, seq_len, c.rope_base)

    def forward(self, carry: Carry, x: torch.Tensor) -> Carry:
        z_h, z_l = carry.z_h, carry.z_l
        n, t = self.c.high_cycles, self.c.low_steps
        steps = n * t
        graded = {"one-step": 1, "last-cycle": t, "bptt": steps}[self.c.gradient]
        f_h = self.f_l if self.f_h is None else self.f_h
        for i in range(steps):
            with torch.no_grad() if i < steps - graded else contextlib.nullcontext():
                z_l = self.f_l(z_l, z_h + x, self.rotary)
                if (i + 1) % t == 0:
                    z_h = f_h(z_h, z_l, self.rotary)
        return Carry(z_h, z_l)


class Direct(nn.Module):
    """The baseline's "reasoner": its `layers` blocks on the input, no carry used; run `repeats` times
    with shared weights and the input injected each time, a recurrent transformer (full gradient)."""

    def __init__(self, c: PuzzleTransformerConfig, seq_len: int) -> None:
        super().__init__()
        self.repeats = c.repeats
        self.stack = Stack(c.layers, dim=c.hidden, heads=c.heads, inner=c.mlp_inner, mlp=c.mlp,
                           rope=c.rope, eps=c.norm_eps, gain=c.norm_gain)
        self.rotary = Rotary(c.hidden // c.heads, seq_len, c.rope_base)

    def forward(self, carry: Carry, x: torch.Tensor) -> Carry:
        z = torch.zeros_like(x)
        for _ in range(self.repeats):
            z = self.stack(z, x, self.rotary)
        return Carry(z, z)


class ConvStem(nn.Module):
    """Early convolutions (REFERENCE I.7): 3x3 stride-2 convolutions with ReLU down to the patch grid,
    then a 1x1 convolution to D; bias-free like every layer of the model. Out: (B, gh*gw, D)."""

    def __init__(self, c: ImageHRMConfig, channels: int) -> None:
        super().__init__()
        widths = [channels, *c.stem_channels()]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1, bias=False)
                                   for a, b in zip(widths, widths[1:]))
        self.project = nn.Conv2d(widths[-1], c.hidden, 1, bias=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        for conv in self.convs:
            x = torch.relu(conv(x))
        return self.project(x).flatten(2).transpose(1, 2)


class ImageHRM(nn.Module):
    """Patch embedding + CLS token -> Reasoner -> linear head on the CLS token of z_H (no ACT)."""

    def __init__(self, c: ImageHRMConfig, data: Shape) -> None:
        super().__init__()
        assert data.image_shape is not None, "an image model needs Shape.image_shape"
        ch, h, w = data.image_shape
        if h % c.patch or w % c.patch:
            raise ValueError(f"patch {c.patch} does not tile {h}x{w} images")
        self.c = c
        self.seq_len = 1 + (h // c.patch) * (w // c.patch)
        if c.stem == "conv":
            self.stem = ConvStem(c, ch)
        else:
            self.patch_embed = nn.Linear(c.patch * c.patch * ch, c.hidden, bias=False)
        self.cls = nn.Parameter(torch.zeros(1, 1, c.hidden))
        self.position = nn.Parameter(torch.zeros(1, self.seq_len, c.hidden)) if c.position == "learned" else None
        self.reasoner = Reasoner(c, self.seq_len)
        self.head = nn.Linear(c.hidden, data.classes, bias=False)
        self.register_buffer("z0_h", torch.zeros(1, self.seq_len, c.hidden))
        self.register_buffer("z0_l", torch.zeros(1, self.seq_len, c.hidden))
        self.carry_dtype: torch.dtype | None = None

    def init_weights(self, generator: torch.Generator) -> None:
        init_linears(self, generator)
        # Flax lecun_normal on a (1, 1, D) array has fan_in 1: a std-1 truncated normal.
        trunc_normal_(self.cls.data, 1.0, generator)
        # The author code draws the states as truncated_normal(-2, 2) without std correction.
        for z in (self.z0_h, self.z0_l):
            nn.init.trunc_normal_(z, 0.0, 1.0, -2.0, 2.0, generator=generator)
        if self.position is not None:   # drawn last: the paper model's draws stay as they were
            trunc_normal_(self.position.data, 0.02, generator)   # ViT's scale for a learned table

    def initial_carry(self, batch: int) -> Carry:
        d = self.carry_dtype
        # Contiguous, as every later carry is: a stride-0 view would be one more compiled graph (a guard).
        return Carry(_as(self.z0_h.expand(batch, -1, -1), d).contiguous(),
                     _as(self.z0_l.expand(batch, -1, -1), d).contiguous())

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        b, ch, h, w = images.shape
        p = self.c.patch
        if self.c.stem == "conv":
            tokens = self.stem(images)
        else:
            # (B, C, H, W) -> (B, gh*gw, P*P*C), flattened (row, col, channel) as the Flax code's NHWC.
            patches = images.permute(0, 2, 3, 1).reshape(b, h // p, p, w // p, p, ch)
            tokens = self.patch_embed(patches.permute(0, 1, 3, 2, 4, 5).reshape(b, (h // p) * (w // p), p * p * ch))
        x = torch.cat([self.cls.expand(b, -1, -1), tokens], dim=1)   # (B, S, D)
        if self.position is not None:
            x = x + self.position
        return _as(x, self.carry_dtype)

    def segment(self, carry: Carry, images: torch.Tensor) -> Output:
        carry = self.reasoner(carry, self.embed(images))
        return Output(self.head(carry.z_h[:, 0]), carry)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Evaluation: eval_segments from the initial state; logits of the last segment."""
        carry = self.initial_carry(len(images))
        for _ in range(self.c.eval_segments):
            out = self.segment(carry, images)
            carry = out.carry.detach()
        return out.logits


class PuzzleEmbedding(nn.Module):
    """Per-puzzle prefix vectors: a zero-initialised fp32 table outside the parameters.

    In training, the rows of a batch are copied into a leaf tensor that receives the gradient; it
    comes back in `Output.puzzle_rows`, and `hrm.models.optim.sign_sgd_rows` updates only those table rows.
    """

    def __init__(self, num_ids: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("table", torch.zeros(num_ids, dim))

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, PuzzleRows | None]:
        rows = self.table[ids]
        if self.training and torch.is_grad_enabled():
            leaf = rows.detach().requires_grad_(True)
            return leaf, PuzzleRows(ids, leaf)
        return rows, None


class PuzzleHRM(nn.Module):
    """The puzzle front end of HRM, TRM and the direct baseline: token embedding after a puzzle-id
    prefix (HRM: 1 position; TRM: 16, the vector in the first, zeros after), scaled by sqrt(D);
    LM head on z_H past the prefix, Q head on z_H's first position."""

    def __init__(self, c: PuzzleModelConfig, vocab: int, seq_len: int, num_puzzle_ids: int) -> None:
        super().__init__()
        self.c = c
        self.prefix = c.puzzle_prefix
        self.embed_scale = math.sqrt(c.hidden)
        self.tokens = nn.Embedding(vocab, c.hidden)
        self.puzzle = PuzzleEmbedding(num_puzzle_ids, c.hidden)
        positions = seq_len + self.prefix
        self.reasoner = (Direct(c, positions) if isinstance(c, PuzzleTransformerConfig)
                         else Reasoner(c, positions))
        self.lm_head = nn.Linear(c.hidden, vocab, bias=False)
        self.q_head = nn.Linear(c.hidden, 2, bias=True)
        self.register_buffer("z0_h", torch.zeros(c.hidden))
        self.register_buffer("z0_l", torch.zeros(c.hidden))
        self.carry_dtype: torch.dtype | None = None

    def init_weights(self, generator: torch.Generator) -> None:
        init_linears(self, generator)
        trunc_normal_(self.tokens.weight.data, 1.0 / self.embed_scale, generator)
        for z in (self.z0_h, self.z0_l):
            trunc_normal_(z, 1.0, generator)
        # Q head starts at 0 weight, -5 bias: sigmoid(-5) ~ 0.007, so early halting is rare.
        nn.init.zeros_(self.q_head.weight)
        nn.init.constant_(self.q_head.bias, -5.0)

    def initial_carry(self, batch: int, seq_len: int) -> Carry:
        shape = (batch, seq_len + self.prefix, self.c.hidden)
        return Carry(_as(self.z0_h.expand(shape), self.carry_dtype).contiguous(),
                     _as(self.z0_l.expand(shape), self.carry_dtype).contiguous())

    def embed(self, inputs: torch.Tensor, puzzle_ids: torch.Tensor) -> tuple[torch.Tensor, PuzzleRows | None]:
        rows, touched = self.puzzle(puzzle_ids)
        prefix = rows.unsqueeze(1).to(self.tokens.weight.dtype)                            # (B, 1, D)
        if self.prefix > 1:
            prefix = F.pad(prefix, (0, 0, 0, self.prefix - 1))                            # (B, P, D)
        x = self.embed_scale * torch.cat([prefix, self.tokens(inputs)], dim=1)             # (B, P + S, D)
        return _as(x, self.carry_dtype), touched

    def segment(self, carry: Carry, inputs: torch.Tensor, puzzle_ids: torch.Tensor) -> Output:
        x, touched = self.embed(inputs, puzzle_ids)
        carry = self.reasoner(carry, x)
        q = self.q_head(carry.z_h[:, 0]).float()
        return Output(self.lm_head(carry.z_h[:, self.prefix:]), carry, q[:, 0], q[:, 1], touched)


def build(c: ImageHRMConfig | PuzzleModelConfig, data: Shape) -> nn.Module:
    if isinstance(c, ImageHRMConfig):
        return ImageHRM(c, data)
    if not data.seq_len or not data.puzzle_ids:
        raise ValueError("a puzzle model needs Shape.seq_len and Shape.puzzle_ids")
    return PuzzleHRM(c, data.classes, data.seq_len, data.puzzle_ids)
