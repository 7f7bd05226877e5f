"""Analytic FLOPs of one optimizer step, per model kind: what `hrm bench train` divides by time.

Only matmul-class work is counted (linear layers, attention's two products, convolutions), the
usual convention for model FLOPs utilisation; norms, activations, RoPE, softmax and the optimizer
are elementwise and left out. The rules:

* a linear map of n rows from k to m features costs 2nkm forward; backward costs 2nkm for the
  weight gradient plus 2nkm for the input gradient, which is skipped where the input needs none
  (the first layer fed with data: the patch embedding, the CNN's first convolution);
* attention over S tokens costs 2 * 2 * S * D per token forward (Q K^T and the weighted sum of V)
  and twice that backward;
* a 3x3 "same" convolution costs 2 * 9 * C_in * C_out per output pixel.

An HRM segment runs N*T low-level calls and N high-level ones (TRM: T recursions of n latent
calls and one answer call); with the one-step gradient only the last of each is differentiated,
with `last-cycle` the whole last cycle, with `bptt` all of them. A training step is: image HRM:
`train_segments` segments, each forward and backward (plus, in faithful mode with `train_acc:
post_update`, one forward of `eval_segments` segments); puzzle HRM and TRM: one segment forward and
backward plus, with Q-learning halting and M_max > 1, the no-grad segment that computes the
continue target; CNN: one forward and backward. tests/test_bench.py checks every formula against
torch's FlopCounterMode. No torch here.
"""

from __future__ import annotations

from hrm.models.registry import (
    BlockConfig,
    CNNConfig,
    HRMCore,
    ImageHRMConfig,
    ModelConfig,
    Recurrent,
    Shape,
    TRMConfig,
    glu_inner,
)


def block_forward(c: BlockConfig, batch: int, seq: int) -> int:
    """One transformer block on `batch` sequences of `seq` tokens (TRM-MLP: a SwiGLU over the tokens
    of each of the D channels instead of attention)."""
    n, d, inner = batch * seq, c.hidden, c.mlp_inner
    if getattr(c, "mixer", "attention") == "mlp":
        return 2 * n * 3 * d * inner + 2 * batch * d * 3 * seq * glu_inner(seq)
    return 2 * n * (4 * d * d + 3 * d * inner) + 2 * 2 * n * seq * d


def reasoner(c: Recurrent, batch: int, seq: int) -> tuple[int, int]:
    """(forward, backward) FLOPs of one segment's recurrence: the graded low steps (one, the last
    cycle's T, or all) and the high steps among them are differentiated."""
    low, high = c.low_layers * block_forward(c, batch, seq), c.high_layers * block_forward(c, batch, seq)
    t, n_low, n_high = c.low_steps, c.high_cycles * c.low_steps, c.high_cycles
    forward = n_low * low + n_high * high
    graded_low = {"one-step": 1, "last-cycle": t, "bptt": n_low}[c.gradient]
    return forward, 2 * (graded_low * low + -(-graded_low // t) * high)


def embedding(c: ImageHRMConfig, ch: int, h: int, w: int, batch: int) -> tuple[int, int]:
    """(forward, backward) of the patch embedding, or of the conv stem (3x3 stride-2 convs, then 1x1)."""
    patches = (h // c.patch) * (w // c.patch)
    if c.stem == "patch":
        embed = 2 * batch * patches * c.patch * c.patch * ch * c.hidden
        return embed, embed                                   # fed with data: weight gradient only
    widths, forward, backward = [ch, *c.stem_channels()], 0, 0
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        conv = 2 * 9 * a * b * (h >> (i + 1)) * (w >> (i + 1)) * batch
        forward, backward = forward + conv, backward + (conv if i == 0 else 2 * conv)
    project = 2 * batch * patches * widths[-1] * c.hidden
    return forward + project, backward + (project if len(widths) == 1 else 2 * project)


def image_hrm_step(c: ImageHRMConfig, data: Shape, batch: int, post_update_acc: bool) -> int:
    assert data.image_shape is not None
    ch, h, w = data.image_shape
    patches = (h // c.patch) * (w // c.patch)
    embed, embed_bwd = embedding(c, ch, h, w, batch)
    head = 2 * batch * c.hidden * data.classes
    fwd, bwd = reasoner(c, batch, patches + 1)
    segment_forward = embed + fwd + head
    graded = segment_forward + embed_bwd + bwd + 2 * head
    # Deep supervision: every segment differentiated; without it, only the last one.
    train = c.train_segments * graded if c.deep_supervision else (c.train_segments - 1) * segment_forward + graded
    return train + (c.eval_segments * segment_forward if post_update_acc else 0)


def puzzle_step(c: ModelConfig, data: Shape, batch: int) -> int:
    """One segment with its update (the optimizer step), plus the target pass where M_max > 1."""
    assert isinstance(c, BlockConfig)
    seq = data.seq_len + c.puzzle_prefix         # the puzzle-id prefix positions
    heads = 2 * batch * data.seq_len * c.hidden * data.classes + 2 * batch * c.hidden * 2   # LM and Q heads
    if isinstance(c, HRMCore | TRMConfig):
        fwd, bwd = reasoner(c, batch, seq)
    else:                                        # the direct baseline: its stack once, all of it trained
        fwd = c.layers * c.repeats * block_forward(c, batch, seq)   # type: ignore[attr-defined]
        bwd = 2 * fwd
    target = fwd + heads if c.halt_max_steps > 1 and c.halting == "q-learning" else 0
    return fwd + heads + bwd + 2 * heads + target


def cnn_step(c: CNNConfig, data: Shape, batch: int) -> int:
    assert data.image_shape is not None
    c_in, h, w = data.image_shape
    forward = backward = 0
    for stage, width in enumerate(c.widths):
        pixels = (h >> stage) * (w >> stage)
        for _ in range(c.convs_per_stage):
            conv = 2 * 9 * c_in * width * pixels * batch
            forward += conv
            backward += conv if forward == conv else 2 * conv   # the first conv: weight gradient only
            c_in = width
    head = 2 * batch * c_in * data.classes
    return forward + head + backward + 2 * head


def train_step(c: ModelConfig, data: Shape, batch: int, post_update_acc: bool = False) -> int:
    """FLOPs of one optimizer step of `c` on a batch of `batch` examples (puzzles: one segment)."""
    if isinstance(c, CNNConfig):
        return cnn_step(c, data, batch)
    if isinstance(c, ImageHRMConfig):
        return image_hrm_step(c, data, batch, post_update_acc)
    return puzzle_step(c, data, batch)
