"""`hrm bench evaluate EXP`: the seconds `hrm evaluate` needs for the full test set, projected from a slice.

Times the evaluation path itself (every segment count scored, ARC votes counted) on the first
`examples` test examples, with random weights of the experiment's model (the cost does not depend
on the weights), on the built data set if it is there, else on random sequences of its shape. The
full test set is the built one, else the published size (REFERENCE II.4). Memory stays bounded
whatever the test set's size: the test arrays are memory-mapped and one batch is on the device at
a time; the peak is reported.
"""

from __future__ import annotations

import resource
import time

import torch

from hrm.bench.train import load_data
from hrm.core import paths, provenance
from hrm.core.atomic import write_json
from hrm.core.errors import ConfigError
from hrm.core.gpu import GpuMonitor, resolve_device, synchronize
from hrm.evaluate.puzzle_pass import score_puzzles
from hrm.evaluate.voting import arc_votes
from hrm.models.registry import build_model
from hrm.pipeline import studies
from hrm.pipeline.config import Params, PuzzleRecipe
from hrm.runtime.speed import apply_precision, attention


def bench_evaluate(params: Params, name: str, examples: int | None = None, synthetic: bool = False,
                   save: bool = False) -> dict:
    exp = params.experiment(name)
    if not isinstance(exp.recipe, PuzzleRecipe):
        raise ConfigError(f"bench evaluate {name}: the puzzle study's evaluation only (image runs evaluate in seconds)")
    data, real = load_data(exp, synthetic)
    n_test = len(data.test.inputs)
    n = min(examples or 4 * exp.recipe.eval_batch_size, n_test)
    full = n_test if real else getattr(studies.ALL_DATASETS[exp.dataset], "published_test", None)
    device = resolve_device(params.runtime.device)
    model = build_model(exp.model, studies.shape(exp.dataset, data.num_ids))
    model.init_weights(torch.Generator().manual_seed(0))
    precision = "bf16-pure" if exp.released else params.runtime.precision    # an import runs the authors' numerics
    amp = apply_precision(model, device, precision)
    model = model.to(device)
    segments = sorted(set(exp.recipe.eval_halt_steps) | {exp.model.halt_max_steps})
    each = arc_votes(data, segments)[2] if data.tasks is not None else None
    part = data.test.head(n)
    with attention(params.runtime.attention), GpuMonitor(device, params.runtime.nvml_interval_s) as monitor:
        score_puzzles(model, data.test.head(min(n, exp.recipe.eval_batch_size)), exp.recipe.eval_batch_size,
                      device, amp, segments, each)        # warm-up: kernels, allocator
        synchronize(device)
        start = time.perf_counter()
        score_puzzles(model, part, exp.recipe.eval_batch_size, device, amp, segments, each)
        synchronize(device)
        seconds = time.perf_counter() - start
    gpu = monitor.facts()
    result = {
        "experiment": name, "model": exp.model_name, "data": "built" if real else "synthetic (random, same shape)",
        "weights": "random (the cost does not depend on them)", "examples_timed": n,
        "batch_size": exp.recipe.eval_batch_size, "segments": max(segments), "scored_at": segments,
        "voting": each is not None, "precision": precision if device.type == "cuda" else "fp32 (CPU)",
        "seconds": seconds, "examples_per_second": n / seconds,
        "full_test_examples": full, "seconds_full_test": full * seconds / n if full else None,
        "full_test_from": ("the built test set" if real else "the published size (REFERENCE II.4)") if full else None,
        "peak_memory_bytes": {
            "torch_allocated": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
            "process_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024},
        "device": gpu["device_name"] or f"cpu ({torch.get_num_threads()} threads)",
        "provenance": provenance.record(exp.params_hash(), gpu["device_name"]),
    }
    if save:
        write_json(paths.bench_file(f"evaluate-{name}-{device.type}"), result)
    return result

