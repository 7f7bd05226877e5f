"""`hrm analyze`: the participation ratio's arithmetic, and both kinds on tiny trained runs of each
study, checked against `hrm evaluate` (two code paths, one number)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_RECIPE, tiny_params, write_params
from test_puzzle_train import TINY_PUZZLE_MODEL, TINY_PUZZLE_RECIPE

from hrm import cli
from hrm.analyze.pr import participation_ratio, spectrum
from hrm.core import paths
from hrm.core.errors import ConfigError
from hrm.data.puzzles.sources import PUZZLES, Generated, PuzzleSet
from hrm.pipeline import stages
from hrm.pipeline.config import load_params

TINY_IMAGE_HRM = {"kind": "hrm-image", "hidden": 16, "heads": 2, "mlp_inner": 32, "mlp": "geglu", "norm_gain": True,
                  "norm_eps": 1e-6, "rope": "interleaved", "rope_base": 10000, "low_layers": 1, "high_layers": 1,
                  "high_cycles": 2, "low_steps": 2, "patch": 4, "train_segments": 2, "eval_segments": 2}


def test_participation_ratio_of_isotropic_gaussian_is_its_dimension() -> None:
    rng = np.random.default_rng(0)
    for d in (4, 16, 64):
        x = rng.standard_normal((40_000, d))
        # The sample covariance's spread inflates sum(l^2) by about (1 + d/N): PR ~ d / (1 + d/N).
        assert participation_ratio(spectrum(x)) == pytest.approx(d / (1 + d / 40_000), rel=0.02)


def test_participation_ratio_counts_effective_dimensions() -> None:
    rng = np.random.default_rng(1)
    line = np.outer(rng.standard_normal(5000), rng.standard_normal(32))          # rank 1
    assert participation_ratio(spectrum(line)) == pytest.approx(1.0, rel=1e-6)
    assert participation_ratio(np.array([1.0, 1.0, 1.0, 0.0])) == pytest.approx(3.0)
    assert participation_ratio(np.array([3.0, 1.0])) == pytest.approx(16 / 10)   # (3+1)^2 / (9+1)
    # Scaling the states changes no PR; a rotation neither (it is a property of the spectrum).
    x = rng.standard_normal((3000, 8)) * np.array([5, 4, 3, 2, 1, 1, 1, 1])
    q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    assert participation_ratio(spectrum(7 * x @ q)) == pytest.approx(participation_ratio(spectrum(x)), rel=1e-9)


@pytest.fixture
def analyzed(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny puzzle HRM (ACT) and a tiny image HRM, trained, evaluated and analysed."""
    monkeypatch.setitem(PUZZLES, "sudoku-tiny", PuzzleSet("sudoku-tiny", "sudoku", Generated(8, 6, seed=3),
                                                          augmentations=0))
    raw = tiny_params(
        sudoku={"group": "analysis", "dataset": "sudoku-tiny", "model": "tiny-puzzle", "recipe": "tiny-puzzle",
                "seeds": [0], "analyses": ["pr", "segments"]},
        digits={"group": "analysis", "dataset": "digits", "model": "tiny-hrm", "recipe": "tiny", "seeds": [0],
                "mode": "faithful", "analyses": ["pr", "segments"], "ablations": ["image"]})
    raw["models"] |= {"tiny-puzzle": TINY_PUZZLE_MODEL, "tiny-hrm": {**TINY_IMAGE_HRM, "patch": 2}}
    raw["recipes"] |= {"tiny-puzzle": {**TINY_PUZZLE_RECIPE, "epochs": 40, "eval_interval": 40}}
    raw["recipes"]["tiny"] = {**TINY_RECIPE, "epochs": 1}
    write_params(project, raw)
    for ds in ("sudoku-tiny", "digits"):
        assert cli.main(["download", ds]) == 0 and cli.main(["build", ds]) == 0
    for name in ("sudoku", "digits"):
        for verb in ("train", "evaluate"):
            assert cli.main([verb, name, "--seed", "0"]) == 0
        for kind in ("pr", "segments"):
            assert cli.main(["analyze", kind, name, "--seed", "0"]) == 0
    return project


def test_analyses_of_both_studies_agree_with_evaluate(analyzed: Path) -> None:
    for name, d in (("sudoku", TINY_PUZZLE_MODEL["hidden"]), ("digits", TINY_IMAGE_HRM["hidden"])):
        pr = json.loads(paths.analysis_file("analysis", name, 0, "pr").read_text())
        for which in ("trained", "untrained"):
            for space in ("z_H", "z_L"):
                m = pr[which][space]
                assert 1.0 <= m["pr"] <= d and len(m["spectrum"]) == d and m["vectors"] > d
            assert pr[which]["ratio"] == pytest.approx(pr[which]["z_H"]["pr"] / pr[which]["z_L"]["pr"])
        # Training moved the states: the trained and untrained spectra differ.
        assert pr["trained"]["z_H"]["pr"] != pytest.approx(pr["untrained"]["z_H"]["pr"], rel=1e-3)
        assert paths.analysis_figure("analysis", name, 0, "pr").stat().st_size > 0
        seg = json.loads(paths.analysis_file("analysis", name, 0, "segments").read_text())
        evaluation = json.loads(paths.eval_file("analysis", name, 0).read_text())
        if name == "sudoku":     # segments 1..max(eval_halt_steps, M_max) = 1..4, as evaluate scores them
            assert seg["segments"] == [1, 2, 3, 4]
            for m, acc in zip(seg["segments"], seg["accuracy"]):
                assert acc == pytest.approx(evaluation["by_segments"][str(m)]["exact_acc"])
            halting = seg["halting"]
            assert sum(halting["histogram"]) == seg["test_examples"] == 6
            assert len(halting["histogram"]) == TINY_PUZZLE_MODEL["halt_max_steps"]
            assert 1 <= halting["mean_steps"] <= TINY_PUZZLE_MODEL["halt_max_steps"]
        else:                    # images: 2 * eval_segments, no Q head
            assert seg["segments"] == [1, 2, 3, 4] and "halting" not in seg
            assert seg["accuracy"][1] == pytest.approx(evaluation["test_acc"])
    # The report tabulates both beside the paper's numbers.
    assert cli.main(["report", "analysis"]) == 0
    table = (analyzed / "results/analyses/tables/analyses.md").read_text()
    assert "89.95" in table and "sudoku seed 0" in table and "digits seed 0" in table
    assert (analyzed / "results/analyses/figures/pr.png").stat().st_size > 0
    assert (analyzed / "results/analyses/figures/image.png").stat().st_size > 0


def test_halting_step_follows_the_q_head(analyzed: Path) -> None:
    """A Q head that always prefers halting halts every example after one segment; one that never
    does runs them all to M_max; either way the accuracy there is that segment's."""
    from hrm.analyze.load import subject
    from hrm.analyze.segments import trace

    s = subject(load_params(), "sudoku", 0)
    m_max = TINY_PUZZLE_MODEL["halt_max_steps"]
    for bias, step in (([5.0, -5.0], 1), ([-5.0, 5.0], m_max)):
        s.model.q_head.weight.data.zero_()
        s.model.q_head.bias.data = torch.tensor(bias)
        result = trace(s, 4, m_max)
        assert result["halting"]["histogram"] == [6 if k == step else 0 for k in range(1, m_max + 1)]
        assert result["halting"]["mean_steps"] == step
        assert result["halting"]["accuracy_at_halt"] == pytest.approx(result["accuracy"][step - 1])


def test_analyses_are_stages_with_their_own_code(project: Path) -> None:
    raw = tiny_params(**{"hrm-digits": {"group": "demo", "dataset": "digits", "model": "tiny-hrm", "recipe": "tiny",
                                        "seeds": [0, 1], "mode": "faithful", "analyses": ["pr"]}})
    raw["models"]["tiny-hrm"] = {**TINY_IMAGE_HRM, "patch": 2}
    write_params(project, raw)
    params = load_params()
    table = {s.name: s for s in stages.stage_table(params)}
    stage = table["analyze-pr-hrm-digits-seed1"]
    assert stage.cmd == "python -m hrm analyze pr hrm-digits --seed 1"
    assert "src/hrm/analyze/pr.py" in stage.deps and "src/hrm/analyze/segments.py" not in stage.deps
    assert str(paths.model_file("demo", "hrm-digits", 1)) in stage.deps
    assert not any("analyze" in d for d in table["train-hrm-digits-seed1"].deps)
    assert str(paths.analysis_file("demo", "hrm-digits", 1, "pr")) in table["report-demo"].deps
    assert "analyze-segments-hrm-digits-seed0" not in table
    # Labels change no run: the same params hash with and without them.
    bare = params.experiment("hrm-digits").params_hash()
    raw["experiments"]["hrm-digits"] |= {"analyses": ["pr", "segments"], "ablations": ["image"]}
    write_params(project, raw)
    assert load_params().experiment("hrm-digits").params_hash() == bare


def test_the_kinds_are_the_same_in_params_and_in_the_verb() -> None:
    import typing

    from hrm.pipeline import studies
    from hrm.pipeline.config import Analysis, analysis_models

    assert set(typing.get_args(Analysis)) == set(studies.ANALYSES)
    assert all(analysis_models(kind) for kind in studies.ANALYSES)


def test_an_analysis_the_model_cannot_have_is_refused(project: Path) -> None:
    raw = tiny_params(**{"cnn": {"group": "demo", "dataset": "digits", "model": "tiny", "recipe": "tiny",
                                 "seeds": [0], "mode": "faithful", "analyses": ["pr"]}})
    write_params(project, raw)
    with pytest.raises(ConfigError, match=r"experiments.cnn.analyses: 'pr' needs a model of kind hrm-image"):
        load_params()
    raw["experiments"]["cnn"]["analyses"] = ["spectra"]
    write_params(project, raw)
    with pytest.raises(ConfigError, match=r"experiments.cnn.analyses\[0\]: got 'spectra'"):
        load_params()
