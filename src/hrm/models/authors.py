"""The HRM authors' model in our terms: their state_dict names and their config, mapped to ours.

Used to import their released checkpoints (hrm.train.released) and by the golden tests. Their
`checkpoint` is the state_dict of the compiled ACTLossHead (REFERENCE II.4b), so every key starts
with `_orig_mod.model.`; their `all_config.yaml` holds the architecture under `arch`.
No torch here: the checks run before anything is loaded.
"""

from __future__ import annotations

import math
from typing import Any

from hrm.core.errors import ConfigError
from hrm.models.registry import PuzzleHRMConfig

PREFIX = "_orig_mod.model."           # torch.compile's wrapper, then the loss head
HRM_ARCH = "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1"
# `forward_dtype` -> our runtime.precision: their default (the key absent) is bf16 for the activations,
# the carry and H_init/L_init alike, which is our bf16-pure.
PRECISION = {None: "bf16-pure", "bfloat16": "bf16-pure", "float32": "fp32"}
# Defaults of their config class for keys a dump may omit.
DEFAULTS = {"rms_norm_eps": 1e-5, "rope_theta": 10000.0, "forward_dtype": None}


def name_map(layers: int | tuple[int, int] = 2, levels: tuple[tuple[str, str], ...] = (("H", "f_h"), ("L", "f_l")),
             mixer: str = "attention") -> dict[str, str]:
    """Their state_dict names (the prefix stripped) -> ours. `layers`: blocks per level, one number
    or (H, L); TRM's one network is their L_level and our f_l."""
    per_level = layers if isinstance(layers, tuple) else (layers,) * len(levels)
    names = {"inner.embed_tokens.embedding_weight": "tokens.weight", "inner.lm_head.weight": "lm_head.weight",
             "inner.q_head.weight": "q_head.weight", "inner.q_head.bias": "q_head.bias",
             "inner.puzzle_emb.weights": "puzzle.table", "inner.H_init": "z0_h", "inner.L_init": "z0_l"}
    for (theirs, ours), count in zip(levels, per_level):
        for i in range(count):
            a, b = f"inner.{theirs}_level.layers.{i}.", f"reasoner.{ours}.blocks.{i}."
            names |= {a + "mlp.gate_up_proj.weight": b + "mlp.up.weight",
                      a + "mlp.down_proj.weight": b + "mlp.down.weight"}
            if mixer == "mlp":
                names |= {a + "mlp_t.gate_up_proj.weight": b + "token_mlp.up.weight",
                          a + "mlp_t.down_proj.weight": b + "token_mlp.down.weight"}
            else:
                names |= {a + "self_attn.qkv_proj.weight": b + "attn.qkv.weight",
                          a + "self_attn.o_proj.weight": b + "attn.out.weight"}
    return names


def hrm_name_map(c: PuzzleHRMConfig) -> dict[str, str]:
    return name_map((c.high_layers, c.low_layers))


def swiglu_inner(expansion: float, hidden: int) -> int:
    """Their SwiGLU width: round(expansion * hidden * 2/3) rounded up to a multiple of 256."""
    return 256 * math.ceil(round(expansion * hidden * 2 / 3) / 256)


def check_arch(arch: dict[str, Any], c: PuzzleHRMConfig, model_key: str, source: str) -> str:
    """Refuse (ConfigError naming the field and both values) an architecture that is not `c`;
    returns the precision their numerics correspond to (runtime.precision's names)."""
    def differ(field: str, theirs: object, ours_key: str, ours: object) -> ConfigError:
        return ConfigError(f"{source}: arch.{field} is {theirs!r} but models.{model_key}.{ours_key} is {ours!r}; "
                           f"the checkpoint is not this experiment's model")

    if arch.get("name") != HRM_ARCH:
        raise differ("name", arch.get("name"), "kind", c.kind)
    missing = [k for k in ("H_cycles", "L_cycles", "H_layers", "L_layers", "hidden_size", "num_heads", "expansion",
                           "puzzle_emb_ndim", "pos_encodings", "halt_max_steps") if k not in arch]
    if missing:
        raise ConfigError(f"{source}: arch lacks {', '.join(missing)} (not an HRM config dump)")
    pairs = (("H_cycles", "high_cycles"), ("L_cycles", "low_steps"), ("H_layers", "high_layers"),
             ("L_layers", "low_layers"), ("hidden_size", "hidden"), ("num_heads", "heads"),
             ("halt_max_steps", "halt_max_steps"))
    for theirs, ours in pairs:
        if arch[theirs] != getattr(c, ours):
            raise differ(theirs, arch[theirs], ours, getattr(c, ours))
    if swiglu_inner(arch["expansion"], arch["hidden_size"]) != c.mlp_inner:
        raise differ("expansion", arch["expansion"], "mlp_inner", c.mlp_inner)
    if arch["puzzle_emb_ndim"] != c.hidden:      # ours prepends exactly one puzzle token of width hidden
        raise differ("puzzle_emb_ndim", arch["puzzle_emb_ndim"], "hidden", c.hidden)
    if arch["pos_encodings"] != "rope" or c.rope != "half":
        raise differ("pos_encodings", arch["pos_encodings"], "rope", c.rope)
    for theirs, ours in (("rms_norm_eps", "norm_eps"), ("rope_theta", "rope_base")):
        value = arch.get(theirs, DEFAULTS[theirs])
        if not math.isclose(float(value), float(getattr(c, ours)), rel_tol=1e-9):
            raise differ(theirs, value, ours, getattr(c, ours))
    # Fixed in their code: SwiGLU, RMSNorm without a gain.
    if c.mlp != "swiglu" or c.norm_gain:
        raise differ("(their code's fixed SwiGLU and gain-less RMSNorm)", "swiglu, no gain", "mlp, norm_gain",
                     f"{c.mlp}, {c.norm_gain}")
    dtype = arch.get("forward_dtype", DEFAULTS["forward_dtype"])
    if dtype not in PRECISION:
        raise ConfigError(f"{source}: arch.forward_dtype is {dtype!r}; known: bfloat16 (or absent), float32")
    return PRECISION[dtype]
