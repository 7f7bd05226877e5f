"""Per-run figures (REFERENCE I.6): loss trace, accuracy curves, confusion, errors (image study) and
the inference-time scaling curve (reasoning study); the reader of the training traces they draw, and
the writer of the data series DVC draws its own plots from."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hrm.core.atomic import atomic_path  # noqa: E402
from hrm.core.errors import DataError  # noqa: E402

MOVING_AVERAGE_STEPS = 50


def read_trace(path: Path, columns: dict[str, type], empty: bool = False) -> list[dict[str, float]]:
    """Rows of a training trace (history.csv, steps.csv) with the given numeric columns; else a DataError
    (no rows too, unless `empty`: an imported run's traces have none)."""
    try:
        with open(path, newline="") as fh:
            rows = [{c: kind(r[c]) for c, kind in columns.items()} for r in csv.DictReader(fh)]
    except FileNotFoundError:
        raise DataError(f"{path}: missing; run `hrm train` for this run first") from None
    except (KeyError, TypeError, ValueError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: malformed training trace ({type(exc).__name__}: {exc}); "
                        f"run `hrm train` for this run again") from None
    if not rows and not empty:
        raise DataError(f"{path}: no rows; run `hrm train` for this run again")
    return rows


def write_series(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    """A data series for `dvc plots` (CSV with a header), written whole or not at all."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def save(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to `window` values (shorter at the start, so no step is dropped)."""
    csum = np.cumsum(np.insert(values.astype(np.float64), 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (csum[idx] - csum[lo]) / (idx - lo)


def loss_trace(steps: np.ndarray, losses: np.ndarray, title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses, lw=0.5, alpha=0.4, label="per step")
    window = min(MOVING_AVERAGE_STEPS, max(len(losses) // 10, 1))
    ax.plot(steps, moving_average(losses, window), lw=1.5, label=f"moving average ({window} steps)")
    ax.set(xlabel="optimizer step", ylabel="training loss", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, path)


def note(text: str, title: str, path: Path) -> None:
    """A figure that says why there is nothing to draw."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    ax.set(title=title)
    ax.axis("off")
    save(fig, path)


def accuracy_curves(history: list[dict[str, Any]], title: str, path: Path) -> None:
    epochs = [int(r["epoch"]) for r in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(epochs, [100 * float(r["train_acc"]) for r in history], marker="o", label="train")
    ax.plot(epochs, [100 * float(r["test_acc"]) for r in history], marker="s", label="test")
    ax.set(xlabel="epoch", ylabel="accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, path)


def confusion_matrix(counts: np.ndarray, names: list[str], title: str, path: Path) -> None:
    """Row-normalised: each row is the distribution of predictions for one true class."""
    rows = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    k = len(names)
    fig, ax = plt.subplots(figsize=(6, 5) if k <= 20 else (10, 9))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if k <= 20:
        ax.set_xticks(range(k), names, rotation=60, ha="right")
        ax.set_yticks(range(k), names)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    save(fig, path)


def error_grid(images: np.ndarray, true: list[int], pred: list[int], names: list[str], title: str,
               path: Path) -> None:
    """Grid of misclassified test images (uint8, N x C x H x W) titled true/pred."""
    cols = 8
    rows = max(1, -(-len(images) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, t, p in zip(axes.flat, images, true, pred):
        pic = img.transpose(1, 2, 0)
        ax.imshow(pic[..., 0] if pic.shape[-1] == 1 else pic, cmap="gray" if pic.shape[-1] == 1 else None)
        ax.set_title(f"{names[t][:8]}/{names[p][:8]}", fontsize=6)
    fig.suptitle(f"{title} (true/pred)" if len(images) else f"{title}: no errors", fontsize=9)
    save(fig, path)


def scaling_curve(segments: list[int], scores: list[float], metric: str, trained_max: int, title: str,
                  path: Path) -> None:
    """Inference-time scaling: test score against the number of segments run at evaluation."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(segments, [100 * s for s in scores], marker="o")
    ax.axvline(trained_max, color="grey", ls="--", lw=1, label=f"trained M_max = {trained_max}")
    ax.set(xlabel="segments at evaluation (M_max)", ylabel=f"test {metric} (%)", title=title)
    ax.set_xscale("log", base=2)
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, path)
