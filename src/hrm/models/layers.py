"""Transformer layers shared by both HRM studies, bottom-up: norm -> RoPE -> attention -> GLU -> block.

The two studies differ only in configuration (REFERENCE I.3 vs II.2): RMSNorm with or without a
learned gain, interleaved or rotate-half RoPE, GEGLU or SwiGLU. No biases, no dropout, post-norm.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from hrm.models.init import lecun_normal_


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps), computed in fp32, times an optional learned gain (image study)."""

    def __init__(self, dim: int, eps: float, gain: bool) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if gain else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        y = x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + self.eps)
        if self.weight is not None:
            y = y * self.weight.float()
        return y.to(x.dtype)


RopeStyle = Literal["interleaved", "half"]   # or None: no rotation (positions learned at the input instead)


class Rotary(nn.Module):
    """1-D rotary position tables: frequencies 1 / base^(i / (Dh/2)), i < Dh/2, positions 0..S-1."""

    def __init__(self, head_dim: int, seq_len: int, base: float) -> None:
        super().__init__()
        half = head_dim // 2
        inv_freq = 1.0 / (base ** (torch.arange(half, dtype=torch.float32) / half))
        freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)   # (S, Dh/2)
        self.register_buffer("cos", freqs.cos(), persistent=False)
        self.register_buffer("sin", freqs.sin(), persistent=False)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, style: RopeStyle) -> torch.Tensor:
    """Rotate x (B, S, H, Dh) by position; pairs are (2i, 2i+1) if interleaved, (i, i + Dh/2) if half."""
    cos, sin = cos[None, : x.shape[1], None, :], sin[None, : x.shape[1], None, :]   # (1, S, 1, Dh/2)
    xf = x.float()
    if style == "interleaved":
        x1, x2 = xf[..., 0::2], xf[..., 1::2]
        out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
    else:
        x1, x2 = xf.chunk(2, dim=-1)
        out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return out.to(x.dtype)


class Attention(nn.Module):
    """Non-causal multi-head self-attention, fused bias-free qkv, RoPE on q and k, SDPA kernel."""

    def __init__(self, dim: int, heads: int, rope: RopeStyle | None) -> None:
        super().__init__()
        self.heads, self.head_dim, self.rope = heads, dim // heads, rope
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, rotary: Rotary) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, self.head_dim).unbind(2)   # each (B, S, H, Dh)
        if self.rope is not None:
            q = apply_rope(q, rotary.cos, rotary.sin, self.rope)
            k = apply_rope(k, rotary.cos, rotary.sin, self.rope)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # (B, H, S, Dh)
        return self.out(y.transpose(1, 2).reshape(b, s, d))


class GatedMLP(nn.Module):
    """GLU feed-forward: Linear D -> 2*inner, act(gate) * up, Linear inner -> D.

    GEGLU (image study, Flax): (u, v) = split, gelu_tanh(v) * u. SwiGLU (HRM): (gate, up) = split,
    silu(gate) * up. Which half is gated only matters when porting weights; it follows each source.
    """

    def __init__(self, dim: int, inner: int, kind: Literal["geglu", "swiglu"]) -> None:
        super().__init__()
        self.kind = kind
        self.up = nn.Linear(dim, 2 * inner, bias=False)
        self.down = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.up(x).chunk(2, dim=-1)
        h = F.gelu(b, approximate="tanh") * a if self.kind == "geglu" else F.silu(a) * b
        return self.down(h)


class Block(nn.Module):
    """Post-norm: x = norm(x + mix(x)); x = norm(x + mlp(x)).

    The token mixer is attention, or (TRM-MLP, REFERENCE V.1) a SwiGLU across the `tokens` positions:
    it runs on the transposed activations (B, D, S), and so does its norm, which therefore
    normalises over the token axis, as the authors' code does.
    """

    def __init__(self, dim: int, heads: int, inner: int, mlp: Literal["geglu", "swiglu"], rope: RopeStyle | None,
                 eps: float, gain: bool, tokens: int = 0, token_inner: int = 0) -> None:
        super().__init__()
        self.mix_tokens = tokens > 0
        if self.mix_tokens:
            self.token_mlp = GatedMLP(tokens, token_inner, "swiglu")
        else:
            self.attn = Attention(dim, heads, rope)
        self.mlp = GatedMLP(dim, inner, mlp)
        self.norm1 = RMSNorm(tokens or dim, eps, gain)
        self.norm2 = RMSNorm(dim, eps, gain)

    def forward(self, x: torch.Tensor, rotary: Rotary) -> torch.Tensor:
        if self.mix_tokens:
            t = x.transpose(1, 2)
            x = self.norm1(t + self.token_mlp(t)).transpose(1, 2)
        else:
            x = self.norm1(x + self.attn(x, rotary))
        return self.norm2(x + self.mlp(x))


class Stack(nn.Module):
    """One recurrent module (f_L or f_H): z <- blocks(z + injection)."""

    def __init__(self, depth: int, **block: object) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(**block) for _ in range(depth))  # type: ignore[arg-type]

    def forward(self, z: torch.Tensor, injection: torch.Tensor, rotary: Rotary) -> torch.Tensor:
        z = z + injection
        for block in self.blocks:
            z = block(z, rotary)
        return z


def init_linears(module: nn.Module, generator: torch.Generator) -> None:
    """LeCun truncated normal for every linear and convolution weight; norm gains start at 1."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            lecun_normal_(m.weight, generator)
        elif isinstance(m, RMSNorm) and m.weight is not None:
            nn.init.ones_(m.weight)
