"""params.yaml as frozen dataclasses: one loader, unknown or repeated keys rejected, ranges checked.

Every error names the dotted key, the value it got and what is allowed. Model sections are
validated against the config class their `kind` selects in `hrm.models.registry`; which study an
experiment belongs to comes from `hrm.pipeline.studies`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from hrm.core import paths
from hrm.core.errors import ConfigError
from hrm.core.fields import closest, identity, parse_section, spec, type_name
from hrm.models.registry import MODELS, ModelConfig
from hrm.pipeline import studies

DEFAULT_PARAMS = Path("params.yaml")


def analysis_models(analysis: str) -> tuple[str, ...]:
    """The model kinds an `hrm analyze` kind applies to: every one needs an HRM's two states (the
    registry's two_states; read live, so a kind added to the registry is one edit)."""
    if analysis not in studies.ANALYSES:
        raise ConfigError(f"analysis {analysis!r} is unknown; known: {', '.join(studies.ANALYSES)}")
    return tuple(kind for kind, entry in MODELS.items() if entry.two_states)

# Ablation families (REFERENCE II.5-II.6, I.7): experiments labelled with one are tabulated and drawn
# together by the report; the label changes no run.
ABLATIONS = ("depth", "supervision", "arc-augmentations", "image", "trm")
Ablation = Literal[ABLATIONS]                        # type: ignore[valid-type]  # the fields' allowed values
Analysis = Literal[tuple(studies.ANALYSES)]          # type: ignore[valid-type]


# --------------------------------------------------------------------------- sections

@dataclass(frozen=True)
class Runtime:
    device: Literal["auto", "cpu", "cuda"] = spec("where to train; auto = cuda if available")
    deterministic: bool = spec("torch deterministic algorithms (bitwise-repeatable on CPU)")
    num_threads: int = spec("CPU threads for torch; 0 = torch's default", ge=0)
    nvml_interval_s: float = spec("NVML sampling period, seconds", gt=0, le=10)
    log_every_steps: int = spec("training loss shown (and, on a GPU, checked: a host sync) every N batches", ge=1)
    progress_seconds: float = spec("without a terminal, a progress line every N seconds (a bar on one)", gt=0)
    # Speed options (hrm.runtime.speed): none changes what a step computes beyond rounding; each is tested on vs off.
    precision: Literal["fp32", "bf16", "bf16-pure"] = spec(
        "CUDA numerics: fp32; bf16 autocast with fp32 weights and carry; bf16-pure = the HRM authors' (carry "
        "and initial states in bf16 too). The CPU always runs fp32")
    attention: Literal["auto", "flash", "efficient", "math"] = spec("SDPA kernel; auto lets torch choose")
    optimizer: Literal["foreach", "fused", "loop"] = spec(
        "optimizer kernels: multi-tensor, one fused kernel (AdamW; Adam-atan2 runs foreach), or per tensor")
    compile: bool = spec("torch.compile the transformer stacks, or the CNN (CUDA only)")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = spec(
        "torch.compile mode; reduce-overhead replays CUDA graphs (for the small, launch-bound image models)")
    data_on_device: bool = spec("puzzle training set resident on the device (image sets always are)")
    processes: int = spec("data-parallel processes per training run and node, one per GPU (hrm.runtime.distributed); "
                          "an experiment's own `processes` overrides it. Above 1, `hrm train` launches torchrun",
                          ge=1, default=1)


@dataclass(frozen=True)
class ImageRecipe:
    """Image-classification training recipe (REFERENCE I.3-I.4)."""

    epochs: int = spec("passes over the training set", ge=1)
    batch_size: int = spec("training batch; the last partial batch is kept", ge=1)
    eval_batch_size: int = spec("test batch, sequential", ge=1)
    lr: float = spec("peak learning rate", gt=0)
    weight_decay: float = spec("AdamW decoupled decay, on all parameters", ge=0)
    betas: tuple[float, float] = spec("AdamW (beta1, beta2)", ge=0, lt=1)
    eps: float = spec("AdamW epsilon", gt=0)
    grad_clip: float = spec("global-norm clip; 0 disables", ge=0)
    warmup_epochs: float = spec("linear warmup from 0, in epochs", ge=0)
    lr_floor: float = spec("cosine ends at lr_floor * lr", ge=0, le=1)
    label_smoothing: float = spec("cross-entropy label smoothing", ge=0, lt=1)
    train_acc: Literal["pre_update", "post_update"] = spec(
        "faithful-mode train accuracy: of the training passes, or a re-run after the updates (REFERENCE I.5)")
    augment: Literal["none", "crop", "crop-flip"] = spec(
        "none: the study's setting; crop: random crop after zero padding by side/8 pixels (4 on CIFAR); crop-flip: "
        "also a horizontal flip with p = 0.5, the follow-up the study proposes for CIFAR (REFERENCE I.7; a flip "
        "turns digits into other shapes, so the digits ablation crops only)", default="none", ablation=True)


@dataclass(frozen=True)
class PuzzleRecipe:
    """Reasoning-study training recipe (REFERENCE II.3); selected by `kind: puzzle`."""

    kind: Literal["puzzle"] = spec("recipe family")
    epochs: int = spec("passes over the groups (one sampled version of each per pass)", ge=1)
    batch_size: int = spec("examples per optimizer step (global batch)", ge=1)
    eval_batch_size: int = spec("test examples per forward pass", ge=1)
    eval_interval: int = spec("evaluate and checkpoint every N epochs", ge=1)
    lr: float = spec("peak learning rate (Adam-atan2)", gt=0)
    puzzle_emb_lr: float = spec("sign-SGD learning rate of the puzzle-id embedding", ge=0)
    weight_decay: float = spec("decoupled decay of all parameters", ge=0)
    puzzle_emb_weight_decay: float = spec("decoupled decay of the touched puzzle-embedding rows", ge=0)
    betas: tuple[float, float] = spec("Adam (beta1, beta2)", ge=0, lt=1)
    warmup_steps: int = spec("linear warmup from 0, then constant", ge=0)
    scheme: Literal["carry", "minibatch"] = spec(
        "carry: the author code's carry across batches; minibatch: the paper's segment loop per batch (II.3)")
    eval_halt_steps: tuple[int, ...] = spec("inference-time scaling: also score after these segment counts", ge=1)
    max_steps: int = spec("stop after this many optimizer steps (0 = the full schedule); a run so cut "
                          "is reported as cut short", ge=0)
    ema: float = spec("rate of an exponential moving average of the weights, updated after every step and used "
                      "for evaluation and model.pt (TRM: 0.999, the puzzle embedding excluded); 0 = none (HRM)",
                      ge=0, lt=1, default=0.0, ablation=True)
    pooled_voting: bool = spec("ARC: TRM's aggregated voting (its evaluators' default), labelled in eval.json: the "
                               "votes of every evaluation during the run are pooled and `hrm evaluate` scores the "
                               "pool; false = the votes of the final checkpoint only (the HRM paper's)",
                               default=False, ablation=True)


SEED_LIMIT = 2**63


@dataclass(frozen=True)
class ExperimentSpec:
    """One named experiment: data set x model x recipe x seeds."""

    group: str = spec("a group of hrm.core.paths.GROUP_ROOTS: paper results (committed), the demo, or the "
                      "demo-scale analyses and ablations (`snakemake analyses`)")
    dataset: str = spec("a data set name from hrm.data.sources")
    model: str = spec("a key of the models section")
    recipe: str = spec("a key of the recipes section")
    seeds: tuple[int, ...] = spec("one run per seed (a 63-bit integer: torch and numpy seed from it)", ge=0,
                                  lt=SEED_LIMIT)
    mode: Literal["faithful", "corrected"] | None = spec(
        "image study only: reproduce the author code's quirks, or fix them (REFERENCE I.5)", default=None)
    stands_for: str | None = spec("demo only: the paper experiment this one stands in for (named in the "
                                  "table beside it)", default=None)
    analyses: tuple[Analysis, ...] = spec("`hrm analyze` kinds run on each trained seed (pr, segments: HRM "
                                          "models only); a stage each", default=())
    ablations: tuple[Ablation, ...] = spec("the ablation families the report tabulates this experiment in "
                                           "(labels: they change no run)", default=())
    # How many processes train it: the global batch and the result do not depend on them (hrm.runtime.distributed).
    processes: int | None = spec("data-parallel processes (GPUs) per node for this experiment's training; "
                                 "default runtime.processes", ge=1, default=None)
    nodes: int = spec("nodes its training spans (SLURM: srun launches torchrun on each)", ge=1, default=1)
    released: str | None = spec("a released checkpoint of the authors (hrm.data.puzzles.sources.RELEASED): the run "
                                "imports it instead of training (REFERENCE II.4b); the recipe only sets evaluation",
                                default=None)


RecipeConfig = ImageRecipe | PuzzleRecipe


@dataclass(frozen=True)
class Experiment:
    """An experiment with its model and recipe resolved: what a run needs."""

    name: str
    group: str
    dataset: str
    model_name: str
    model: ModelConfig
    recipe_name: str
    recipe: RecipeConfig
    seeds: tuple[int, ...]
    mode: str | None        # None where the study has no fidelity modes
    stands_for: str | None = None   # demo only: the paper experiment it stands in for
    analyses: tuple[str, ...] = ()  # `hrm analyze` kinds
    ablations: tuple[str, ...] = ()  # ablation families (report labels)
    processes: int = 1              # data-parallel processes per node (one GPU each)
    nodes: int = 1
    released: str | None = None     # the authors' checkpoint it imports instead of training

    @property
    def trains(self) -> bool:
        """Whether `hrm train` trains it (else it imports a released checkpoint: no fingerprint, no steps)."""
        return self.released is None

    def module(self, verb: str) -> str:
        """The module offering `verb` for this experiment: its study's, but an import for `train`."""
        return studies.RELEASED_MODULES[verb] if verb == "train" and not self.trains else self.study.modules[verb]

    def verb(self, verb: str) -> typing.Callable[..., typing.Any]:
        """That module's `verb(params, name, seed)` (imports torch only now)."""
        return getattr(importlib.import_module(self.module(verb)), verb)

    @property
    def world(self) -> int:
        """Training processes in all: one rank per GPU, on every node."""
        return self.processes * self.nodes

    @property
    def study(self) -> studies.Study:
        return studies.of_dataset(self.dataset)

    def as_dict(self) -> dict[str, Any]:
        body = {"name": self.name, "group": self.group, "dataset": self.dataset,
                "model": {"name": self.model_name, **dataclasses.asdict(self.model)},
                "recipe": {"name": self.recipe_name, **dataclasses.asdict(self.recipe)},
                "seeds": list(self.seeds)}
        return (body | ({"mode": self.mode} if self.mode is not None else {})
                | ({"stands_for": self.stands_for} if self.stands_for is not None else {})
                | ({"analyses": list(self.analyses)} if self.analyses else {})
                | ({"ablations": list(self.ablations)} if self.ablations else {})
                | ({"processes": self.processes} if self.processes != 1 else {})
                | ({"nodes": self.nodes} if self.nodes != 1 else {})
                | ({"released": self.released} if self.released is not None else {}))

    def params_hash(self) -> str:
        """Hash of everything that shapes a run of this experiment (not the seed list, not the label)."""
        body = self.as_dict() | {"model": {"name": self.model_name, **identity(self.model)},
                                 "recipe": {"name": self.recipe_name, **identity(self.recipe)}}
        # What a run does not depend on; the process count changes float summation order only.
        for label in ("seeds", "stands_for", "analyses", "ablations", "processes", "nodes"):
            body.pop(label, None)
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Params:
    runtime: Runtime
    models: dict[str, ModelConfig]
    recipes: dict[str, RecipeConfig]
    experiments: dict[str, Experiment]
    path: Path

    def experiment(self, name: str) -> Experiment:
        if name not in self.experiments:
            raise ConfigError(f"{self.path}: experiment {name!r} is not in 'experiments'"
                              f"{closest(name, self.experiments)}; defined: {', '.join(self.experiments)}")
        return self.experiments[name]


def _named_sections(cls_for: typing.Callable[[str, Any], type], data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{where}: got {type_name(data)}; expected a non-empty mapping of names")
    return {str(name): parse_section(cls_for(str(name), body), body, f"{where}.{name}")
            for name, body in data.items()}


def _model_class(name: str, body: Any) -> type:
    kind = body.get("kind") if isinstance(body, dict) else None
    if not isinstance(kind, str) or kind not in MODELS:
        raise ConfigError(f"models.{name}.kind: got {kind!r}{closest(str(kind), MODELS)}; "
                          f"allowed: {', '.join(MODELS)}")
    return MODELS[kind].config


def _recipe_class(name: str, body: Any) -> type:
    kind = body.get("kind") if isinstance(body, dict) else None
    if kind is None:
        return ImageRecipe
    if kind != "puzzle":
        raise ConfigError(f"recipes.{name}.kind: got {kind!r}; allowed: 'puzzle' (or no kind: an image recipe)")
    return PuzzleRecipe


def _resolve(name: str, s: ExperimentSpec, models: dict[str, ModelConfig],
             recipes: dict[str, RecipeConfig], runtime: Runtime) -> Experiment:
    """Check one experiment against its study (from the table in hrm.pipeline.studies) and resolve it."""
    where = f"experiments.{name}"
    for key, table in (("dataset", studies.ALL_DATASETS), ("model", models), ("recipe", recipes)):
        value = getattr(s, key)
        if value not in table:
            raise ConfigError(f"{where}.{key}: got {value!r}{closest(value, table)}; allowed: {', '.join(table)}")
    if s.group not in paths.GROUP_ROOTS:        # read now: a group added to the table is allowed at once
        raise ConfigError(f"{where}.group: got {s.group!r}{closest(s.group, paths.GROUP_ROOTS)}; allowed: "
                          f"{', '.join(paths.GROUP_ROOTS)}")
    study = studies.of_dataset(s.dataset)
    model, recipe = models[s.model], recipes[s.recipe]
    if model.kind not in study.model_kinds or getattr(recipe, "kind", None) != study.recipe_kind:
        raise ConfigError(f"{where}: dataset {s.dataset!r} is of the {study.name} study, which needs a model of "
                          f"kind {' or '.join(study.model_kinds)} and a recipe with "
                          f"{'kind: ' + study.recipe_kind if study.recipe_kind else 'no kind key'}; got model "
                          f"{s.model!r} (kind {model.kind}) and recipe {s.recipe!r}")
    if study.modes and s.mode is None:
        raise ConfigError(f"{where}.mode: missing; the {study.name} study needs one of {', '.join(study.modes)}")
    if not study.modes and s.mode is not None:
        raise ConfigError(f"{where}.mode: got {s.mode!r}, but the {study.name} study has no fidelity modes; "
                          f"remove the key")
    if len(set(s.seeds)) != len(s.seeds):
        raise ConfigError(f"{where}.seeds: got {list(s.seeds)}; seeds must be distinct")
    for kind in s.analyses:
        kinds = analysis_models(kind)
        if model.kind not in kinds:
            raise ConfigError(f"{where}.analyses: {kind!r} needs a model of kind {' or '.join(kinds)}; "
                              f"model {s.model!r} is of kind {model.kind}")
    if s.released is not None:
        _check_released(where, s, model)
    processes = s.processes or runtime.processes
    if processes * s.nodes > recipe.batch_size:
        raise ConfigError(f"{where}: {processes * s.nodes} processes ({s.nodes} node(s) x {processes}) would leave "
                          f"some without rows of a batch of {recipe.batch_size} (recipes.{s.recipe}.batch_size); "
                          f"use fewer processes (experiments.{name}.processes or runtime.processes)")
    return Experiment(name, s.group, s.dataset, s.model, model, s.recipe, recipe, s.seeds, s.mode, s.stands_for,
                      s.analyses, s.ablations, processes, s.nodes, s.released)


def _check_released(where: str, s: ExperimentSpec, model: ModelConfig) -> None:
    from hrm.data.puzzles.sources import RELEASED

    ck = RELEASED.get(str(s.released))
    if ck is None:
        raise ConfigError(f"{where}.released: got {s.released!r}{closest(str(s.released), RELEASED)}; "
                          f"allowed: {', '.join(RELEASED)}")
    if s.dataset != ck.dataset or model.kind != "hrm-puzzle":
        raise ConfigError(f"{where}: the released checkpoint {ck.name} is an HRM (model kind hrm-puzzle) of data "
                          f"set {ck.dataset!r}; got dataset {s.dataset!r} and model {s.model!r} (kind {model.kind})")


def parse_params(raw: Any, path: Path) -> Params:
    sections = ("runtime", "models", "recipes", "experiments")
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a mapping with sections {', '.join(sections)}; got {type_name(raw)}")
    for key in raw:
        if key not in sections:
            raise ConfigError(f"{key}: unknown section{closest(str(key), sections)}; allowed: {', '.join(sections)}")
    for key in sections:
        if key not in raw:
            raise ConfigError(f"{key}: missing section")
    runtime = parse_section(Runtime, raw["runtime"], "runtime")
    models = _named_sections(_model_class, raw["models"], "models")
    recipes = _named_sections(_recipe_class, raw["recipes"], "recipes")
    specs = _named_sections(lambda n, b: ExperimentSpec, raw["experiments"], "experiments")
    experiments = {name: _resolve(name, s, models, recipes, runtime) for name, s in specs.items()}
    for name, e in experiments.items():
        if e.stands_for is None:
            continue
        target = experiments.get(e.stands_for)
        if e.group != "demo" or target is None or target.group != "paper":
            raise ConfigError(f"experiments.{name}.stands_for: got {e.stands_for!r}; only a demo experiment "
                              f"names one, and it must be a paper experiment{closest(e.stands_for, experiments)}")
    return Params(runtime, models, recipes, experiments, path)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key written twice in one mapping is an error, not an overwrite."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"key {key!r} is written twice in one mapping, at lines {seen[key]} and {line}; "
                                  f"keep one (YAML would silently use the later)")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_params(path: Path | str = DEFAULT_PARAMS) -> Params:
    """Read and validate a params file; every problem is a ConfigError naming the key."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found (run from the project root or pass --params)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read params file: {exc}") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)   # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"{path}: invalid YAML{line}: {getattr(exc, 'problem', exc)}") from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        return parse_params(raw, path)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
