"""The package's layering, read from its import statements (the same reader the stage table uses)."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Literal

import pytest

from hrm.pipeline import stages

PACKAGE = stages.SRC / "hrm"
LAYERS = ("data", "models", "train", "evaluate")


def module_name(path: Path) -> str:
    parts = path.relative_to(stages.SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(module_name(p) for p in PACKAGE.rglob("*.py"))


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "top"


def test_every_module_is_read() -> None:
    assert {"hrm.train.run", "hrm.evaluate.voting", "hrm.data.puzzles.stream", "hrm.models.registry"} <= set(MODULES)


def test_no_import_cycles() -> None:
    """Depth-first search over real import statements (the registry's importlib names are lazy by design)."""
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in stages._imports(m, named=False):
            if n == m or m.startswith(n + "."):                  # a package above: not an edge back
                continue
            if state.get(n) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(n):] + [n]) if n in path
                            else f"import cycle through {n}")
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in MODULES:
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("lower,forbidden", [("data", ("models", "train", "evaluate")),
                                             ("models", ("data", "train", "evaluate")),
                                             ("evaluate", ("train",))])
def test_layers_import_downwards_only(lower: str, forbidden: tuple[str, ...]) -> None:
    bad = [(m, n) for m in MODULES if layer(m) == lower
           for n in stages._imports(m) if layer(n) in forbidden]
    assert not bad, f"{lower}/ must not import {forbidden}: {bad}"


def test_no_module_imports_another_modules_private_names() -> None:
    bad = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hrm"):
                bad += [f"{path.relative_to(PACKAGE)}: {node.module}.{a.name}" for a in node.names
                        if a.name.startswith("_")]
    assert not bad


def test_the_study_is_decided_in_one_table() -> None:
    """Outside the data layer and hrm.pipeline.studies, nothing asks a data-set table which study it is in."""
    allowed = {"pipeline/studies.py", "bench/build.py"}
    bad = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "data" or str(rel) in allowed:
            continue
        text = path.read_text()
        bad += [f"{rel}: {word}" for word in ("PUZZLES", "DATASETS", "is_puzzle") if re.search(rf"\b{word}\b", text)]
    assert not bad


def test_a_layer_violation_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader sees a forbidden import in a function body, so the tests above can fail."""
    for rel, text in (("hrm/__init__.py", ""), ("hrm/data/__init__.py", ""), ("hrm/models/__init__.py", ""),
                      ("hrm/models/registry.py", ""),
                      ("hrm/data/probe.py", "def f():\n    from hrm.models import registry\n    return registry\n")):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    monkeypatch.setattr(stages, "SRC", tmp_path)
    stages._imports.cache_clear()
    try:
        assert "hrm.models.registry" in stages._imports("hrm.data.probe")
    finally:
        stages._imports.cache_clear()


# The folders as floors, the ground first: a module imports only from its own folder or from a lower floor.
FLOORS = {"core": 0, "data": 1, "models": 1, "pipeline": 2, "runtime": 3, "evaluate": 4, "train": 5,
          "analyze": 6, "report": 6, "bench": 7}


def folder(module: str) -> str | None:
    """The folder of src/hrm a module lives in (None: a loose top-level module, or the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else None


def test_every_folder_is_on_a_floor_and_few_modules_are_loose() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders == set(FLOORS), f"give each folder of src/hrm its floor in FLOORS: {folders ^ set(FLOORS)}"
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert len(loose) <= 6, loose


def test_the_folders_import_downwards_only() -> None:
    bad = [(m, n) for m in MODULES for n in stages._imports(m, named=False)
           if folder(m) and folder(n) and folder(m) != folder(n) and FLOORS[folder(n)] >= FLOORS[folder(m)]]
    assert not bad, f"imports across or up the floors {FLOORS}: {bad}"


def test_a_group_is_one_entry_in_the_groups_table_plus_params(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A new group (say, a sweep whose results live in results/sweep/) needs its line in
    hrm.core.paths.GROUP_ROOTS and experiments that name it; the params, the stage table, train,
    evaluate and report follow."""
    from conftest import tiny_params, write_params

    from hrm.cli import main
    from hrm.core import paths
    from hrm.pipeline.config import load_params

    raw = tiny_params()
    raw["experiments"]["digits-tiny"]["group"] = "sweep"
    write_params(project, raw)
    assert main(["check"]) == 2
    assert "experiments.digits-tiny.group: got 'sweep'" in capsys.readouterr().err
    monkeypatch.setitem(paths.GROUP_ROOTS, "sweep", "results/sweep")           # the one edit
    assert main(["check"]) == 0
    assert "report-sweep" in {s.name for s in stages.stage_table(load_params())}
    assert main(["download", "digits"]) == 0 and main(["build", "digits"]) == 0
    assert main(["train", "digits-tiny", "--seed", "0"]) == 0 and main(["evaluate", "digits-tiny", "--seed", "0"]) == 0
    assert main(["report", "sweep"]) == 0
    assert (project / "results/sweep/runs/digits-tiny/seed0/eval.json").is_file()
    assert "digits-tiny" in (project / "results/sweep/tables/summary.md").read_text()
    assert (project / "results/sweep/README.md").read_text().startswith("# The sweep runs")


def test_a_model_kind_is_one_row_in_the_registry_plus_params(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A new model kind (here a variant of the image HRM under its own name) needs its config class and
    module, and then one row in hrm.models.registry.MODELS; the study it runs under, the analyses it
    allows, its label in the ablation tables and its tiny version in the speed check follow."""
    import dataclasses

    from conftest import tiny_params, write_params

    from hrm.bench import check
    from hrm.cli import main
    from hrm.core.fields import spec
    from hrm.models import registry
    from hrm.pipeline import studies
    from hrm.pipeline.config import analysis_models
    from hrm.report.ablations import depth_family

    @dataclasses.dataclass(frozen=True)
    class WideHRM(registry.ImageHRMConfig):
        kind: Literal["hrm-image-wide"] = spec("model family")    # type: ignore[assignment]

    raw = tiny_params()
    raw["models"]["tiny"] = {**registry.MODELS["hrm-image"].tiny, "kind": "hrm-image-wide", "patch": 4}
    raw["experiments"]["digits-tiny"]["analyses"] = ["segments"]
    write_params(project, raw)
    assert main(["check"]) == 2
    assert "models.tiny.kind: got 'hrm-image-wide'" in capsys.readouterr().err
    row = dataclasses.replace(registry.MODELS["hrm-image"], config=WideHRM, label="wide HRM")
    monkeypatch.setitem(registry.MODELS, "hrm-image-wide", row)                   # the one edit
    assert main(["check"]) == 0
    assert "hrm-image-wide" in studies.STUDIES["image"].model_kinds and "hrm-image-wide" in analysis_models("pr")
    assert check.tiny_models()["hrm-image-wide"]["kind"] == "hrm-image-wide"
    assert main(["download", "digits"]) == 0 and main(["build", "digits"]) == 0
    assert main(["train", "digits-tiny", "--seed", "0"]) == 0 and main(["evaluate", "digits-tiny", "--seed", "0"]) == 0
    assert main(["analyze", "segments", "digits-tiny", "--seed", "0"]) == 0
    from hrm.pipeline.config import load_params
    assert depth_family(load_params().experiment("digits-tiny")) == "wide HRM"


# Branches on a study's name that remain to be replaced by entries of the study table (issue 30); the
# list must shrink, never grow: a new branch fails here, and a removed one must leave the list.
STUDY_NAME_BRANCHES: set[str] = set()


def test_no_new_branch_on_a_study_name() -> None:
    found = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
             if re.search(r"study\.name\s*[!=]=|\bname\s*==\s*\"(image|puzzle)\"", p.read_text())
             and p.relative_to(PACKAGE) != Path("pipeline/studies.py")}
    assert found == STUDY_NAME_BRANCHES, f"branch on the study's name outside the study table: {found}"
