"""params validation: every bad input is exit code 2 with a message naming the key; nothing written."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO, real_params, write_params

from hrm.cli import main
from hrm.core.errors import ConfigError
from hrm.pipeline.config import load_params, parse_params


def test_committed_params_are_valid() -> None:
    params = load_params(REPO / "params.yaml")
    assert {"cifar10-cnn", "cifar100-cnn", "digits-cnn"} <= set(params.experiments)
    c10 = params.experiment("cifar10-cnn")
    assert c10.seeds == (2025,) and params.experiment("cifar100-cnn").seeds == (2026,)
    assert c10.recipe.epochs == 25 and c10.recipe.lr == pytest.approx(3e-4)
    assert c10.recipe.betas == (0.9, 0.999)


def _mutated(edit) -> dict:
    raw = copy.deepcopy(real_params())
    edit(raw)
    return raw


BAD = {
    "unknown key (typo)": (lambda r: r["recipes"]["cifar-cnn"].update(learning_rate=0.1),
                           ["recipes.cifar-cnn.learning_rate", "unknown key"]),
    "typo suggests closest": (lambda r: r["recipes"]["cifar-cnn"].update(epoch=3),
                              ["recipes.cifar-cnn.epoch", "did you mean 'epochs'"]),
    "wrong type": (lambda r: r["recipes"]["cifar-cnn"].update(batch_size="big"),
                   ["recipes.cifar-cnn.batch_size", "'big'", "integer"]),
    "negative lr": (lambda r: r["recipes"]["cifar-cnn"].update(lr=-0.001),
                    ["recipes.cifar-cnn.lr", "-0.001", "> 0"]),
    "bool for number": (lambda r: r["runtime"].update(nvml_interval_s=True), ["runtime.nvml_interval_s"]),
    "missing key": (lambda r: r["recipes"]["cifar-cnn"].pop("eps"), ["recipes.cifar-cnn.eps", "missing"]),
    "missing section": (lambda r: r.pop("runtime"), ["runtime", "missing section"]),
    "unknown section": (lambda r: r.update(trainer={}), ["trainer", "unknown section"]),
    "unknown model kind": (lambda r: r["models"]["cnn-small"].update(kind="resnet"),
                           ["models.cnn-small.kind", "'resnet'", "allowed"]),
    "dangling recipe": (lambda r: r["experiments"]["cifar10-cnn"].update(recipe="cifar-cnnn"),
                        ["experiments.cifar10-cnn.recipe", "did you mean 'cifar-cnn'"]),
    "unknown dataset": (lambda r: r["experiments"]["cifar10-cnn"].update(dataset="svhn"),
                        ["experiments.cifar10-cnn.dataset", "'svhn'"]),
    "bad group": (lambda r: r["experiments"]["cifar10-cnn"].update(group="extra"),
                  ["experiments.cifar10-cnn.group", "got 'extra'; allowed: paper, demo, analysis"]),
    "empty seeds": (lambda r: r["experiments"]["cifar10-cnn"].update(seeds=[]),
                    ["experiments.cifar10-cnn.seeds", "empty"]),
    "duplicate seeds": (lambda r: r["experiments"]["cifar10-cnn"].update(seeds=[1, 1]),
                        ["experiments.cifar10-cnn.seeds", "distinct"]),
    "betas length": (lambda r: r["recipes"]["cifar-cnn"].update(betas=[0.9]), ["recipes.cifar-cnn.betas"]),
    "beta out of range": (lambda r: r["recipes"]["cifar-cnn"].update(betas=[0.9, 1.5]),
                          ["recipes.cifar-cnn.betas", "< 1"]),
    "zero processes": (lambda r: r["experiments"]["cifar10-cnn"].update(processes=0),
                       ["experiments.cifar10-cnn.processes", ">= 1"]),
    "processes not a number": (lambda r: r["runtime"].update(processes="eight"), ["runtime.processes", "'eight'"]),
    "more ranks than batch rows": (lambda r: r["experiments"]["cifar10-cnn"].update(processes=64, nodes=4),
                                   ["experiments.cifar10-cnn", "256 processes (4 node(s) x 64)", "batch_size",
                                    "use fewer processes"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_params_exit_2_naming_the_key(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit, needles = BAD[case]
    path = write_params(tmp_path, _mutated(edit))
    before = sorted(tmp_path.rglob("*"))
    assert main(["--params", str(path), "check"]) == 2
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, (case, err)
    assert "Traceback" not in err
    assert sorted(tmp_path.rglob("*")) == before   # nothing written


def test_every_stage_refuses_bad_params_before_writing(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = yaml.safe_load(Path("params.yaml").read_text())
    raw["recipes"]["tiny"]["lr"] = -1
    write_params(project, raw)
    for argv in (["download", "digits"], ["build", "digits"], ["train", "digits-tiny", "--seed", "0"],
                 ["evaluate", "digits-tiny", "--seed", "0"], ["report", "demo"], ["dvc-yaml"]):
        assert main(argv) == 2, argv
        assert "recipes.tiny.lr" in capsys.readouterr().err
    assert not any(p.name not in ("src", "params.yaml") for p in project.iterdir())


def test_unknown_experiment_and_dataset(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["describe", "digits-tiyn"]) == 2
    assert "'digits-tiyn'" in capsys.readouterr().err
    assert main(["train", "nope", "--seed", "0"]) == 2
    assert "experiment 'nope'" in capsys.readouterr().err
    assert main(["download", "mnsit"]) == 2
    assert "did you mean 'mnist'" in capsys.readouterr().err


def test_invalid_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("runtime:\n  device: [auto\n")
    with pytest.raises(ConfigError, match=r"params.yaml: invalid YAML at line \d"):
        load_params(path)


def test_scientific_notation_string_is_a_float(tmp_path: Path) -> None:
    # PyYAML reads 3e-4 (no dot) as a string; the loader accepts it as the number it means.
    raw = real_params()
    raw["recipes"]["cifar-cnn"]["lr"] = "3e-4"
    assert load_params(write_params(tmp_path, raw)).recipes["cifar-cnn"].lr == pytest.approx(3e-4)


def test_params_hash_tracks_hyperparameters_not_seeds() -> None:
    base = load_params(REPO / "params.yaml").experiment("cifar10-cnn")
    assert len(base.params_hash()) == 12
    from dataclasses import replace

    assert replace(base, seeds=(1, 2)).params_hash() == base.params_hash()
    assert replace(base, recipe=replace(base.recipe, lr=1e-3)).params_hash() != base.params_hash()
    # The number of processes changes float summation order, not the run (hrm.runtime.distributed): same hash,
    # though the model.pt's experiment record says how it was trained.
    spread = replace(base, processes=8, nodes=2)
    assert spread.params_hash() == base.params_hash() and spread.world == 16
    assert spread.as_dict()["processes"] == 8 and "processes" not in base.as_dict()


def test_a_key_written_twice_is_rejected_naming_it_and_both_lines(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The trap: a second `mnist-cnn:` pasted under experiments silently replaced the paper's run."""
    text = (REPO / "params.yaml").read_text()
    pasted = ("  mnist-cnn:\n    group: demo\n    dataset: digits\n    model: cnn-small\n    recipe: digits-cnn\n"
              "    seeds: [0]\n    mode: faithful\n")
    path = tmp_path / "params.yaml"
    path.write_text(text.rstrip("\n") + "\n" + pasted)
    first = 1 + text.splitlines().index("  mnist-cnn:")
    second = len(text.rstrip("\n").splitlines()) + 1
    assert main(["--params", str(path), "check"]) == 2
    err = capsys.readouterr().err
    assert f"'mnist-cnn' is written twice in one mapping, at lines {first} and {second}" in err
    # A nested key too.
    path.write_text(text.replace("    lr: 1.0e-3\n", "    lr: 1.0e-3\n    lr: 2.0e-3\n", 1))
    assert main(["check", "--params", str(path)]) == 2
    assert "'lr' is written twice" in capsys.readouterr().err


def test_params_file_is_accepted_before_and_after_the_verb(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "other.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    for argv in (["--params", str(path), "check"], ["check", "--params", str(path)]):
        assert main(argv) == 0
        assert str(path) in capsys.readouterr().out


@pytest.mark.parametrize("experiment,change,message", [
    ("sudoku-demo-hrm", {"mode": "faithful"}, "experiments.sudoku-demo-hrm.mode: got 'faithful', but the puzzle "
                                              "study has no fidelity modes"),
    ("digits-cnn", {"mode": None}, "experiments.digits-cnn.mode: missing; the image study needs one of"),
    ("digits-cnn", {"model": "hrm-puzzle-tiny"}, "is of the image study, which needs a model of kind cnn or hrm-image"),
    ("mnist-hrm", {"stands_for": "mnist-cnn"}, "experiments.mnist-hrm.stands_for: got 'mnist-cnn'; only a demo "
                                               "experiment names one"),
    ("sudoku-demo-hrm", {"stands_for": "maze-demo-hrm"}, "it must be a paper experiment"),
    ("sudoku-demo-hrm", {"stands_for": "sudoku-extreme-hrm"}, "did you mean 'sudoku-extreme-1k-hrm'"),
])
def test_each_study_takes_only_its_own_keys(experiment: str, change: dict, message: str, tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["experiments"][experiment].update(change)
    raw["experiments"][experiment] = {k: v for k, v in raw["experiments"][experiment].items() if v is not None}
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_params(raw, tmp_path / "params.yaml")
