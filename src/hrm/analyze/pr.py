"""`hrm analyze pr`: the participation ratio of the HRM's two state spaces (REFERENCE II.5).

PR = (sum of eigenvalues)^2 / (sum of squared eigenvalues) of the covariance of hidden-state vectors:
the number of dimensions the states effectively spread over (D for an isotropic cloud, 1 for a
line). The vectors are z_H and z_L of every token position (the puzzle prefix and the image CLS
token included) after the last evaluation segment (M_max for puzzles, eval_segments for images),
over the first test examples. The same architecture freshly initialised as training starts it
(same seed) is measured the same way: the paper's untrained control. Paper: z_H 89.95, z_L 30.22
(ratio 2.98) for the 27M Sudoku HRM; an untrained network shows no such separation.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from hrm.analyze.load import Subject, subject  # noqa: E402
from hrm.core import paths, provenance  # noqa: E402
from hrm.core.atomic import write_json  # noqa: E402
from hrm.evaluate.figures import save  # noqa: E402
from hrm.pipeline.config import Params  # noqa: E402

log = logging.getLogger("hrm")
MAX_VECTORS = 65_536      # token vectors per state space: N >> D keeps the estimate's bias (~D/N) small
BATCH = 128


def participation_ratio(eigenvalues: np.ndarray) -> float:
    lam = np.clip(np.asarray(eigenvalues, np.float64), 0.0, None)
    return float(lam.sum() ** 2 / (lam ** 2).sum())


def spectrum(vectors: np.ndarray) -> np.ndarray:
    """Eigenvalues of the covariance of `vectors` (N, D), largest first, in float64."""
    x = np.asarray(vectors, np.float64)
    x = x - x.mean(axis=0)
    cov = x.T @ x / max(1, len(x) - 1)
    return np.linalg.eigvalsh(cov)[::-1]


@torch.no_grad()
def states(s: Subject, examples: int) -> dict[str, np.ndarray]:
    """z_H and z_L token vectors after the last evaluation segment, (N, D) each."""
    c = s.exp.model
    segments = c.halt_max_steps if s.sequences else c.eval_segments
    out: dict[str, list[np.ndarray]] = {"z_H": [], "z_L": []}
    for inputs, _ in s.batches(examples, BATCH):
        carry = s.initial_carry(inputs)
        for _ in range(segments):
            carry = s.segment(carry, inputs).carry
        out["z_H"].append(carry.z_h.float().flatten(0, 1).cpu().numpy())
        out["z_L"].append(carry.z_l.float().flatten(0, 1).cpu().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def measure(s: Subject, examples: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for space, vectors in states(s, examples).items():
        lam = spectrum(vectors)
        out[space] = {"pr": participation_ratio(lam), "vectors": len(vectors),
                      "spectrum": [float(v) for v in lam]}
    out["ratio"] = out["z_H"]["pr"] / out["z_L"]["pr"]
    return out


def analyze(params: Params, name: str, seed: int) -> Path:
    trained = subject(params, name, seed, trained=True)
    tokens = trained.model.seq_len if not trained.sequences else trained.data.test.inputs.shape[1] + 1
    examples = min(trained.test_size(), max(1, MAX_VECTORS // tokens))
    result: dict[str, Any] = {"experiment": name, "seed": seed, "examples": examples, "tokens_per_example": tokens,
                              "dimension": trained.exp.model.hidden}
    result["trained"] = measure(trained, examples)
    result["untrained"] = measure(subject(params, name, seed, trained=False), examples)
    result["provenance"] = provenance.record(trained.exp.params_hash())
    g = trained.exp.group
    draw(result, f"{name} seed {seed}", paths.analysis_figure(g, name, seed, "pr"))
    out = paths.analysis_file(g, name, seed, "pr")
    write_json(out, result)
    t, u = result["trained"], result["untrained"]
    log.info("%s seed %d: PR z_H %.2f z_L %.2f (ratio %.2f); untrained z_H %.2f z_L %.2f (ratio %.2f); D = %d",
             name, seed, t["z_H"]["pr"], t["z_L"]["pr"], t["ratio"], u["z_H"]["pr"], u["z_L"]["pr"], u["ratio"],
             result["dimension"])
    return out


def draw(result: dict[str, Any], title: str, path: Path) -> None:
    """Eigenvalue spectra (each normalised by its sum), trained and untrained, z_H and z_L."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for which, style in (("trained", "-"), ("untrained", ":")):
        for space, color in (("z_H", "tab:red"), ("z_L", "tab:blue")):
            m = result[which][space]
            lam = np.asarray(m["spectrum"])
            ax.plot(np.arange(1, len(lam) + 1), lam / lam.sum(), style, color=color,
                    label=f"{space} {which}: PR {m['pr']:.1f}")
    ax.set(xscale="log", yscale="log", xlabel="eigenvalue rank", ylabel="share of variance",
           title=f"{title}: participation ratio (D = {result['dimension']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save(fig, path)
