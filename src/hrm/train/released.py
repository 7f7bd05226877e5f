"""`hrm train` of a released experiment (`experiments.X.released`): import, do not train.

The run directory gets what a training leaves (model.pt, metrics.json, history.csv and steps.csv,
the last two with no rows: no optimizer step is taken here), made from the authors' published
checkpoint (REFERENCE II.4b) by mapping every tensor to ours: the architecture in all_config.yaml
must be the experiment's model (hrm.models.authors.check_arch), every key must map to exactly one
of our weights with its shape, none may be missing. The puzzle-embedding rows follow their build's
identifiers: Sudoku and Maze have the blank one only; ARC rows are matched to our build's versions
by name (their `identifiers.json`), and the import refuses when any test version has no row
(their versions depend on their filesystem's directory order, so ours need not be theirs).
Provenance names the checkpoint's repo, revision and sha256 instead of a training command.
Everything is checked before anything is written.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from hrm.core import checkpoint, paths, provenance
from hrm.core.atomic import together, write_bytes, write_json, write_text
from hrm.core.errors import ConfigError, DataError
from hrm.core.locks import holding_run_lock
from hrm.data.puzzles import stream
from hrm.data.puzzles.layout import IDENTIFIERS
from hrm.data.puzzles.released import ORIGIN
from hrm.data.puzzles.sources import RELEASED, ReleasedCheckpoint
from hrm.data.sourcelock import sha256_tree
from hrm.models.authors import PREFIX, check_arch, hrm_name_map
from hrm.models.registry import PuzzleHRMConfig, build_model, count_params
from hrm.pipeline import studies
from hrm.pipeline.config import Params

log = logging.getLogger("hrm")
CONFIG = "all_config.yaml"
WEIGHTS = "checkpoint"
TABLE = "puzzle.table"


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG
    if not path.is_file():
        raise DataError(f"{path}: missing (the authors' folder holds it beside `{WEIGHTS}`); run `hrm download` "
                        "for this checkpoint again")
    try:
        config = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not readable YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(config, dict) or not isinstance(config.get("arch"), dict):
        raise DataError(f"{path}: no `arch` mapping (not the authors' all_config.yaml)")
    return config


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise DataError(f"{path}: missing; run `hrm download` for this checkpoint")
    try:
        state = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types on truncated or foreign files
        raise DataError(f"{path}: not a readable torch state_dict (truncated or another format: "
                        f"{type(e).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{path}: not a state_dict (a mapping of names to tensors)")
    return state


def convert(state: dict[str, torch.Tensor], config: PuzzleHRMConfig, expected: dict[str, torch.Size],
            source: str, rows: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """Their state_dict -> ours (fp32). Every key must carry PREFIX and map to one of our weights with
    its shape; `rows` picks (in our identifier order) their puzzle-embedding rows."""
    names = hrm_name_map(config)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        inner = key.removeprefix(PREFIX)
        if inner == key or inner not in names:
            raise DataError(f"{source}: key {key!r} fits no weight of our model "
                            f"({'no ' + PREFIX + ' prefix' if inner == key else 'unknown name'})")
        ours = names[inner]
        if ours == TABLE and rows is not None:
            tensor = tensor[torch.from_numpy(rows)]
        if tuple(tensor.shape) != tuple(expected[ours]):
            raise DataError(f"{source}: {key} has shape {tuple(tensor.shape)}, our {ours} needs "
                            f"{tuple(expected[ours])}")
        out[ours] = tensor.to(torch.float32)
    missing = [theirs for theirs, ours in names.items() if ours not in out]
    if missing:
        raise DataError(f"{source}: lacks {PREFIX}{missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1
                                                                     else "") + f" (our {names[missing[0]]})")
    return out


def puzzle_rows(ck: ReleasedCheckpoint, raw: Path, data: stream.PuzzleData) -> tuple[np.ndarray | None, dict]:
    """Which of their embedding rows each of our identifiers takes (None: the same order, the blank id
    only), and what the mapping found, for metrics.json."""
    if data.info.get("kind") != "arc":
        return None, {"identifiers": "the blank id only (REFERENCE II.4b)"}
    theirs_path, ours_path = raw / IDENTIFIERS, paths.built_dir(data.name) / IDENTIFIERS
    if not theirs_path.is_file():
        raise DataError(f"{ck.name}: the checkpoint's rows follow the authors' build's identifier order, which "
                        f"depends on their filesystem's directory order (REFERENCE II.4b), and {ck.repo}@{ck.revision} "
                        f"ships no {IDENTIFIERS} to map them by name; refusing to score with misplaced rows")
    theirs, ours = (json.loads(p.read_text()) for p in (theirs_path, ours_path))
    index = {n: i for i, n in enumerate(theirs)}
    test_ids = np.unique(np.asarray(data.test.puzzle_identifiers))
    unmatched = [ours[i] for i in test_ids if ours[i] not in index]
    if unmatched:
        raise DataError(f"{ck.name}: {len(unmatched)} of the {len(test_ids)} test versions of our {data.name} build "
                        f"have no row in the checkpoint (e.g. {unmatched[0]!r}): the authors drew other augmented "
                        "versions (their draw follows their filesystem's order, REFERENCE II.4b); refusing to score "
                        "with rows that belong to other versions")
    rows = np.array([index.get(n, 0) for n in ours], dtype=np.int64)     # training-only versions: unused here
    return rows, {"identifiers": f"matched by name: {len(test_ids)} test versions, "
                                 f"{sum(n in index for n in ours)} of {len(ours)} in all"}


@holding_run_lock
@together
def train(params: Params, name: str, seed: int) -> Path:
    exp = params.experiment(name)
    assert exp.released is not None
    ck = RELEASED[exp.released]
    if not isinstance(exp.model, PuzzleHRMConfig):
        raise ConfigError(f"experiments.{name}.model: a released HRM checkpoint needs an hrm-puzzle model")
    raw = paths.raw_dir(ck.name)
    source = f"{raw} ({ck.repo}@{ck.revision})"
    config = read_config(raw)
    precision = check_arch(config["arch"], exp.model, exp.model_name, str(raw / CONFIG))
    state = read_weights(raw / WEIGHTS)
    data = stream.load(exp.dataset)
    model = build_model(exp.model, studies.shape(exp.dataset, data.num_ids))
    rows, mapping = puzzle_rows(ck, raw, data)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    model.load_state_dict(convert(state, exp.model, expected, source, rows), strict=True)
    files = {f: sha256_tree(raw / f) for f in (*ck.files, *ck.optional) if (raw / f).is_file()}
    origin = json.loads((raw / ORIGIN).read_text()) if (raw / ORIGIN).is_file() else {}
    released = {"repo": ck.repo, "revision": ck.revision, "sha256": files, "fetched_from": origin.get("files", {}),
                "authors_data_path": config.get("data_path"), "arch": config["arch"], **mapping}
    record = provenance.record(exp.params_hash())
    record["command"] += f" (import of the released checkpoint {ck.repo}@{ck.revision}, no training)"
    metrics = {"experiment": name, "seed": seed, "group": exp.group, "dataset": exp.dataset,
               "model": exp.model_name, "recipe": exp.recipe_name, "complete": True, "epochs": 0,
               "epochs_planned": 0, "optimizer_steps": 0, "precision": precision,
               "params": count_params(exp.model, studies.shape(exp.dataset, 1)), "released": released,
               "provenance": record | {"checkpoint": {"repo": ck.repo, "revision": ck.revision,
                                                      "sha256": files[WEIGHTS]}}}
    g = exp.group
    write_bytes(paths.model_file(g, name, seed),
                checkpoint.model_bytes(exp.as_dict(), seed, model, {"params_hash": exp.params_hash(),
                                                                        "precision": precision, "released": released}))
    write_text(paths.history_file(g, name, seed), "step,train_acc,test_acc\n")
    write_text(paths.steps_file(g, name, seed), "step,loss\n")
    write_json(paths.metrics_file(g, name, seed), metrics)
    log.info("%s: imported %s@%s (sha256 %s, %s numerics) into %s", name, ck.repo, ck.revision, files[WEIGHTS][:12],
             precision, paths.model_file(g, name, seed))
    return paths.metrics_file(g, name, seed)
