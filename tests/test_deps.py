"""Each stage's code dependencies are exactly the modules its verb imports (from the import graph),
held against what a real run of the stage imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_params, write_params

from hrm.pipeline import stages
from hrm.pipeline.config import load_params

RUN = ("import json, sys\nfrom hrm.cli import main\nrc = main(sys.argv[1:])\n"
       "print(json.dumps([rc, sorted(m for m in sys.modules if m == 'hrm' or m.startswith('hrm.'))]))")


def imported_by(argv: list[str], cwd: Path) -> set[str]:
    out = subprocess.run([sys.executable, "-c", RUN, *argv], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rc, modules = json.loads(out.stdout.strip().splitlines()[-1])
    assert rc == 0, out.stderr[-2000:]
    return set(modules)


def declared(stage: stages.Stage) -> set[str]:
    files = {Path(d).relative_to("src") for d in stage.deps if d.startswith("src/")}
    return {".".join(f.with_suffix("").parts).removesuffix(".__init__") for f in files}


@pytest.mark.slow
def test_every_stage_imports_only_what_it_declares(project: Path) -> None:
    raw = tiny_params(**{
        "digits-tiny": {"group": "demo", "dataset": "digits", "model": "tiny", "recipe": "tiny", "seeds": [0],
                        "mode": "faithful"},
        "maze-tiny": {"group": "demo", "dataset": "maze-demo", "model": "hrm-puzzle-tiny", "recipe": "maze-tiny",
                      "seeds": [0], "analyses": ["pr", "segments"]}})
    raw["recipes"]["tiny"]["epochs"] = 1
    raw["recipes"]["maze-tiny"] = {**raw["recipes"]["maze-demo"], "epochs": 1, "eval_interval": 1,
                                   "batch_size": 500, "eval_halt_steps": [1]}
    write_params(project, raw)
    table = stages.stage_table(load_params())
    assert {s.verb for s in table} == {"download", "build", "fingerprint", "train", "evaluate", "analyze", "report"}
    # A training's code is declared by its fingerprint stage (the train stage depends on that file).
    by_cmd = {s.cmd: s for s in table}
    # What `python -m hrm` loads to read the params and choose a verb: `hrm check` runs nothing else.
    # Every other module a stage imports must be among the stage's declared dependencies.
    dispatcher = imported_by(["check"], project)
    assert "hrm.cli" in dispatcher and not {"hrm.train.run", "hrm.evaluate.voting", "hrm.report.tables"} & dispatcher
    for stage in table:                                   # in DAG order
        used = imported_by(stage.cmd.split()[3:], project)
        declares = by_cmd[stage.cmd.replace(" train ", " fingerprint ")] if stage.verb == "train" else stage
        missing = used - declared(declares) - dispatcher
        assert not missing, f"{stage.name} imports modules it does not declare: {sorted(missing)}"
        unused = declared(declares) - used
        # Declared but not imported: only the model modules the registry names for importlib (a run
        # imports its own kind's; the report imports none).
        allowed = {"hrm.models.cnn", "hrm.models.hrm", "hrm.models.act", "hrm.models.layers", "hrm.models.init"}
        if stage.verb == "train":     # the probe's own module is its fingerprint's dependency, not the training's
            allowed |= {"hrm.train.fingerprint"}
        if stage.verb == "analyze":   # one loader serves both studies: the image readers are declared, unused here
            allowed |= {"hrm.data.build", "hrm.data.formats", "hrm.evaluate.image_pass"}
        assert unused <= allowed, f"{stage.name}: {sorted(unused)}"


def test_deps_follow_imports_not_folders() -> None:
    """Files only evaluation imports are dependencies of evaluation stages only (the figure helpers: of the
    analyses too); an analysis depends on its own kind's module only; data stages see no model code."""
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    for stage in stages.stage_table(params):
        per_run = stage.verb in ("evaluate", "fingerprint")
        study = params.experiment(stage.cmd.split()[4]).study.name if per_run else None
        assert ("src/hrm/evaluate/figures.py" in stage.deps) == (stage.verb in ("evaluate", "analyze")), stage.name
        for kind in ("pr", "segments"):
            assert (f"src/hrm/analyze/{kind}.py" in stage.deps) == stage.name.startswith(f"analyze-{kind}-")
        # The vote table: puzzle evaluation, and the training that pools votes (TRM), held by the fingerprints.
        assert ("src/hrm/evaluate/voting.py" in stage.deps) == (
            stage.verb in ("evaluate", "fingerprint") and study == "puzzle"), stage.name
        assert ("src/hrm/train/run.py" in stage.deps) == (stage.verb == "fingerprint"), stage.name
        if stage.verb in ("download", "build"):
            assert not [d for d in stage.deps if "/train/" in d or "/evaluate/" in d or "/models/" in d], stage.name
