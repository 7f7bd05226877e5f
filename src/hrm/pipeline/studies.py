"""The two studies as one table: which data sets, models, recipes and modules each verb uses.

"Which study" is decided here, once, from a data set's name; the CLI, the stage table and the
params validation look the answer up instead of branching. Each verb module named here offers
the same function (`download(name, source, relock)`, `build(name)`, `train(params, name, seed)`,
`evaluate(params, name, seed)`), so a verb runs any study the same way.
No torch here: `hrm check`, `describe` and the stage table stay fast.
"""

from __future__ import annotations

import importlib
from collections import ChainMap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hrm.core import paths
from hrm.core.errors import ConfigError
from hrm.core.fields import closest
from hrm.data.puzzles.sources import PUZZLES
from hrm.data.sources import DATASETS
from hrm.models.registry import MODELS, Shape

# The analyses of a trained run (`hrm analyze KIND`): kind -> (module offering `analyze(params, name, seed)`,
# what it measures). Both read an HRM's two states through its segments: they apply to the model kinds
# whose registry row says two_states (hrm.pipeline.config.analysis_models).
ANALYSES: dict[str, tuple[str, str]] = {
    "pr": ("hrm.analyze.pr", "participation ratio of z_H and z_L, trained and untrained (HRM paper, II.5)"),
    "segments": ("hrm.analyze.segments", "accuracy after each segment and the halting-step distribution (ACT)"),
}


def analysis(kind: str) -> Callable[..., Any]:
    """The kind's `analyze(params, name, seed) -> Path` (imports torch only now)."""
    return importlib.import_module(ANALYSES[kind][0]).analyze


# The authors' released checkpoints (REFERENCE II.4b): downloaded like a data set, "trained" by an import.
RELEASED_MODULES = {"download": "hrm.data.puzzles.released", "train": "hrm.train.released"}


@dataclass(frozen=True)
class Study:
    name: str
    title: str                                   # its heading on the audit page
    paper: str                                   # the study's source (REFERENCE section)
    datasets: Mapping[str, Any]                  # name -> hrm.data.sources.Dataset | PuzzleSet
    modules: Mapping[str, str]                   # verb -> module offering the verb's function; "pass": the
                                                 # test-set pass, whose load_data/test_batches analyses read
    recipe_kind: str | None                      # the `kind` its recipes carry (None: no kind key)
    modes: tuple[str, ...]                       # fidelity modes its code reads; () = no `mode` key
    figures: tuple[str, ...]                     # per-run figures `evaluate` draws
    plot_data: tuple[str, ...]                   # per-run data series `evaluate` writes for `dvc plots`
    predictions: bool                            # `evaluate` writes predictions.json
    sequences: bool                              # one output per input token, scored by exact match, halted by
                                                 # ACT up to halt_max_steps (else one label per input, eval_segments)
    shape: Callable[[Any, int], Shape]           # (data-set spec, puzzle ids) -> what a model needs

    @property
    def model_kinds(self) -> tuple[str, ...]:
        """The model kinds the registry files under this study (hrm.models.registry.MODELS is their one home)."""
        return tuple(kind for kind, entry in MODELS.items() if entry.study == self.name)

    def verb(self, verb: str) -> Callable[..., Any]:
        """The verb's function (imports its module, and torch with it, only now)."""
        return getattr(importlib.import_module(self.modules[verb]), verb)


STUDIES: dict[str, Study] = {
    "image": Study(
        name="image", title="Study I: image classification", paper="REFERENCE I (Mantzaris, arXiv 2510.03598)",
        datasets=DATASETS,
        modules={"download": "hrm.data.download", "build": "hrm.data.build", "train": "hrm.train.image",
                 "evaluate": "hrm.evaluate.image", "pass": "hrm.evaluate.image_pass"},
        recipe_kind=None, modes=("faithful", "corrected"),
        figures=paths.FIGURES, plot_data=paths.PLOT_DATA_FILES, predictions=False, sequences=False,
        shape=lambda d, ids: Shape(classes=d.classes, image_shape=d.image_shape)),
    "puzzle": Study(
        name="puzzle", title="Study II: reasoning puzzles", paper="REFERENCE II (Wang et al., arXiv 2506.21734)",
        datasets=PUZZLES,
        modules={"download": "hrm.data.puzzles.download", "build": "hrm.data.puzzles.build",
                 "train": "hrm.train.puzzle", "evaluate": "hrm.evaluate.puzzle",
                 "pass": "hrm.evaluate.puzzle_pass"},
        recipe_kind="puzzle", modes=(),
        figures=paths.PUZZLE_FIGURES, plot_data=paths.PUZZLE_PLOT_DATA_FILES, predictions=True, sequences=True,
        shape=lambda d, ids: Shape(classes=d.classes, seq_len=d.seq_len, puzzle_ids=ids)),
}
# A live view (not a copy): tests may add a data set to a study's table.
ALL_DATASETS: Mapping[str, Any] = ChainMap(*(s.datasets for s in STUDIES.values()))  # type: ignore[arg-type]


def of_dataset(name: str) -> Study:
    for study in STUDIES.values():
        if name in study.datasets:
            return study
    raise ConfigError(f"dataset {name!r} is unknown{closest(name, ALL_DATASETS)}; known: {', '.join(ALL_DATASETS)}")


def shape(dataset: str, puzzle_ids: int = 1) -> Shape:
    """The model-facing facts of a data set (puzzle ids only matter for building, not counting)."""
    study = of_dataset(dataset)
    return study.shape(study.datasets[dataset], puzzle_ids)
