"""Params that pass `hrm check` must not crash at step 1: rules across keys and number ranges are checked
when the file is loaded, and a run on the edge of them ends in one line, not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import tiny_params, write_params
from helpers import EXPERIMENT, SEED, setup_run

from hrm.cli import main


@pytest.mark.parametrize("change,message", [
    (lambda r: r["models"]["hrm-mnist"].update(heads=3), "models.hrm-mnist.heads: hidden (128) / heads (3)"),
    (lambda r: r["models"]["hrm-mnist"].update(hidden=130, heads=10), "must be a whole, even head width"),
    (lambda r: r["recipes"]["tiny"].update(lr=1e39), "recipes.tiny.lr: got 1e+39; expected a finite number"),
    (lambda r: r["recipes"]["tiny"].update(weight_decay=float("inf")), "recipes.tiny.weight_decay: got inf"),
    (lambda r: r["experiments"]["digits-tiny"].update(seeds=[2**64]), "experiments.digits-tiny.seeds: got"),
])
def test_cross_field_and_range_rules_are_checked_on_load(project: Path, capsys: pytest.CaptureFixture[str],
                                                         change, message: str) -> None:
    raw = tiny_params()
    change(raw)
    write_params(project, raw)
    assert main(["check"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_a_seed_beyond_64_bits_on_the_command_line_is_refused(project: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "digits-tiny", "--seed", str(2**64)]) == 2
    assert "--seed: got 18446744073709551616; must be >= 0 and < 2**63" in capsys.readouterr().err


def test_a_huge_learning_rate_ends_in_one_line(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup_run(project, epochs=1)
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["recipes"]["tiny"]["lr"] = 3e38
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    capsys.readouterr()
    code = main(["train", EXPERIMENT, "--seed", str(SEED)])
    err = capsys.readouterr().err
    assert code in (0, 3) and "Traceback" not in err, err
