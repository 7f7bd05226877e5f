"""params.yaml as frozen dataclasses: one loader, unknown keys rejected, ranges checked.

Every error names the dotted key, the value it got and what is allowed. Model sections are
validated against the config class their `kind` selects in `hrm.models.registry`.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from hrm.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")
GROUPS = ("paper", "demo")


def spec(doc: str, *, gt: float | None = None, ge: float | None = None,
         le: float | None = None, lt: float | None = None) -> Any:
    """A required dataclass field with a range; `doc` is shown in error messages."""
    return field(metadata={"doc": doc, "gt": gt, "ge": ge, "le": le, "lt": lt})


# --------------------------------------------------------------------------- sections

@dataclass(frozen=True)
class Runtime:
    device: Literal["auto", "cpu", "cuda"] = spec("where to train; auto = cuda if available")
    deterministic: bool = spec("torch deterministic algorithms (bitwise-repeatable on CPU)")
    num_threads: int = spec("CPU threads for torch; 0 = torch's default", ge=0)
    nvml_interval_s: float = spec("NVML sampling period, seconds", gt=0, le=10)
    log_every_steps: int = spec("plain-log line every N batches", ge=1)
    precision: Literal["fp32", "bf16"] = spec("autocast dtype on CUDA (parameters stay fp32); CPU is fp32")
    compile: bool = spec("torch.compile the transformer stacks (CUDA only)")


@dataclass(frozen=True)
class Recipe:
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


@dataclass(frozen=True)
class ExperimentSpec:
    """One named experiment: data set x model x recipe x seeds."""

    group: Literal["paper", "demo"] = spec("paper results (committed) or the demo")
    dataset: str = spec("a data set name from hrm.data.sources")
    model: str = spec("a key of the models section")
    recipe: str = spec("a key of the recipes section")
    seeds: tuple[int, ...] = spec("one run per seed", ge=0)
    mode: Literal["faithful", "corrected"] = spec("reproduce the author code's quirks, or fix them (I.5)")


@dataclass(frozen=True)
class Experiment:
    """An experiment with its model and recipe resolved: what a run needs."""

    name: str
    group: str
    dataset: str
    model_name: str
    model: Any  # the model config dataclass chosen by its kind
    recipe_name: str
    recipe: Any  # Recipe or PuzzleRecipe
    seeds: tuple[int, ...]
    mode: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "group": self.group, "dataset": self.dataset,
                "model": {"name": self.model_name, **dataclasses.asdict(self.model)},
                "recipe": {"name": self.recipe_name, **dataclasses.asdict(self.recipe)},
                "seeds": list(self.seeds), "mode": self.mode}

    def params_hash(self) -> str:
        """Hash of everything that shapes a run of this experiment (not the seed list)."""
        body = self.as_dict()
        body.pop("seeds")
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Params:
    runtime: Runtime
    models: dict[str, Any]
    recipes: dict[str, Any]
    experiments: dict[str, Experiment]
    path: Path

    def experiment(self, name: str) -> Experiment:
        if name not in self.experiments:
            raise ConfigError(f"{self.path}: experiment {name!r} is not in 'experiments'"
                              f"{closest(name, self.experiments)}; defined: {', '.join(self.experiments)}")
        return self.experiments[name]


# --------------------------------------------------------------------------- validation

def closest(key: str, allowed: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`; numbers written like 3e-4 (a YAML string) pass as floats."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            allowed = ", ".join(repr(a) for a in typing.get_args(tp))
            raise ConfigError(f"{where}: got {value!r}; allowed: {allowed}")
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: got {_type_name(value)} {value!r}; expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            if not value:
                raise ConfigError(f"{where}: got an empty list; expected at least one item")
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: got {len(value)} items; expected {len(args)}")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin in (typing.Union, types.UnionType):
        return _coerce(typing.get_args(tp)[0], value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: got {_type_name(value)} {value!r}; expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: got {_type_name(value)} {value!r}; expected an integer")
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: got {_type_name(value)} {value!r}; expected a number")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: got {value!r}; expected a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: got {_type_name(value)} {value!r}; expected a non-empty string")
        return value
    raise TypeError(f"unsupported annotation {tp!r} at {where}")


def _check_range(value: Any, meta: typing.Mapping[str, Any], where: str) -> None:
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            continue
        bounds = [("gt", lambda a, b: a > b, ">"), ("ge", lambda a, b: a >= b, ">="),
                  ("lt", lambda a, b: a < b, "<"), ("le", lambda a, b: a <= b, "<=")]
        for name, ok, sym in bounds:
            bound = meta.get(name)
            if bound is not None and not ok(item, bound):
                raise ConfigError(f"{where}: got {value!r}; must be {sym} {bound} ({meta.get('doc', '')})")


def parse_section(cls: type, data: Any, where: str) -> Any:
    """Build the frozen dataclass `cls` from a mapping, rejecting unknown or missing keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: got {_type_name(data)}; expected a mapping of {cls.__name__} keys")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise ConfigError(f"{where}.{key}: unknown key{closest(str(key), names)}; "
                              f"allowed: {', '.join(names)}")
    values = {}
    for f in dataclasses.fields(cls):
        key = f"{where}.{f.name}"
        if f.name not in data:
            raise ConfigError(f"{key}: missing ({f.metadata.get('doc', f.name)})")
        values[f.name] = _coerce(hints[f.name], data[f.name], key)
        _check_range(values[f.name], f.metadata, key)
    return cls(**values)


def _named_sections(cls_for: typing.Callable[[str, Any], type], data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{where}: got {_type_name(data)}; expected a non-empty mapping of names")
    return {str(name): parse_section(cls_for(str(name), body), body, f"{where}.{name}")
            for name, body in data.items()}


def _model_class(name: str, body: Any) -> type:
    from hrm.models.registry import MODEL_CONFIGS

    kind = body.get("kind") if isinstance(body, dict) else None
    if not isinstance(kind, str) or kind not in MODEL_CONFIGS:
        raise ConfigError(f"models.{name}.kind: got {kind!r}{closest(str(kind), MODEL_CONFIGS)}; "
                          f"allowed: {', '.join(MODEL_CONFIGS)}")
    return MODEL_CONFIGS[kind]


def _recipe_class(name: str, body: Any) -> type:
    kind = body.get("kind") if isinstance(body, dict) else None
    if kind is None:
        return Recipe
    if kind != "puzzle":
        raise ConfigError(f"recipes.{name}.kind: got {kind!r}; allowed: 'puzzle' (or no kind: an image recipe)")
    return PuzzleRecipe


def parse_params(raw: Any, path: Path) -> Params:
    from hrm.data.sources import DATASETS
    from hrm.puzzles.sources import PUZZLES

    sections = ("runtime", "models", "recipes", "experiments")
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a mapping with sections {', '.join(sections)}; got {_type_name(raw)}")
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
    experiments = {}
    for name, s in specs.items():
        where = f"experiments.{name}"
        for key, table in (("dataset", {**DATASETS, **PUZZLES}), ("model", models), ("recipe", recipes)):
            value = getattr(s, key)
            if value not in table:
                raise ConfigError(f"{where}.{key}: got {value!r}{closest(value, table)}; "
                                  f"allowed: {', '.join(table)}")
        puzzle = s.dataset in PUZZLES
        if puzzle != models[s.model].kind.endswith("-puzzle") or puzzle != isinstance(recipes[s.recipe], PuzzleRecipe):
            raise ConfigError(f"{where}: dataset {s.dataset!r}, model {s.model!r} and recipe {s.recipe!r} must all "
                              f"be of one study (puzzle data needs a *-puzzle model and a `kind: puzzle` recipe)")
        if len(set(s.seeds)) != len(s.seeds):
            raise ConfigError(f"{where}.seeds: got {list(s.seeds)}; seeds must be distinct")
        experiments[name] = Experiment(name, s.group, s.dataset, s.model, models[s.model],
                                       s.recipe, recipes[s.recipe], s.seeds, s.mode)
    return Params(runtime, models, recipes, experiments, path)


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
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"{path}: invalid YAML{line}: {getattr(exc, 'problem', exc)}") from None
    try:
        return parse_params(raw, path)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
