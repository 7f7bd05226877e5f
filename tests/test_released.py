"""The authors' released checkpoints: download, import (the train stage of a released experiment), evaluation.

The fixtures (`../shared/fixtures/reference/authors-checkpoint/`, README section 5) are checkpoints in the
authors' released format, written by their own code, with their evaluation of a fixed batch: our import must
reproduce every segment's outputs, and refuse a checkpoint that is not the experiment's model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, tiny_params, write_params
from test_puzzle_train import TINY_PUZZLE_RECIPE

from hrm import cli
from hrm.core import paths
from hrm.core.errors import ConfigError, DataError
from hrm.data.puzzles.download import LOCK
from hrm.data.puzzles.layout import IDENTIFIERS
from hrm.data.puzzles.sources import PUZZLES, RELEASED, Generated, PuzzleSet, ReleasedCheckpoint
from hrm.evaluate.voting import COLOR_OFFSET, crop
from hrm.models.act import act_step, initial_state
from hrm.models.authors import check_arch
from hrm.models.registry import PuzzleHRMConfig, Shape, build_model
from hrm.train import released

FIXTURES = Path(os.environ.get("HRM_TEST_FIXTURES", REPO.parent / "shared/fixtures/reference")) / "authors-checkpoint"
# The fixtures' architecture (their all_config.yaml) in our terms.
TINY = {"kind": "hrm-puzzle", "hidden": 64, "heads": 2, "mlp_inner": 256, "mlp": "swiglu", "norm_gain": False,
        "norm_eps": 1e-5, "rope": "half", "rope_base": 10000, "low_layers": 1, "high_layers": 1, "high_cycles": 2,
        "low_steps": 2, "halt_max_steps": 4, "halt_exploration": 0.1}
SHAPES = {"sudoku-tiny": Shape(classes=11, seq_len=81, puzzle_ids=1), "arc-tiny": Shape(classes=12, seq_len=900,
                                                                                        puzzle_ids=9)}


def _fixture(name: str) -> Path:
    folder = FIXTURES / name
    if not (folder / "checkpoint").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{folder}: fixture missing (CI must run with ../shared beside the checkout)")
        pytest.skip(f"{folder}: fixture missing")
    return folder


def _config() -> PuzzleHRMConfig:
    return PuzzleHRMConfig(**{k: v for k, v in TINY.items()})


# ------------------------------------------------------------------ the conversion, against the authors' evaluation

@pytest.mark.parametrize("name", ["sudoku-tiny", "arc-tiny"])
def test_import_reproduces_the_authors_evaluation(name: str) -> None:
    folder = _fixture(name)
    config = _config()
    assert check_arch(released.read_config(folder)["arch"], config, "tiny", "x") == "fp32"   # forward_dtype float32
    model = build_model(config, SHAPES[name])
    expected = {k: v.shape for k, v in model.state_dict().items()}
    state = released.read_weights(folder / "checkpoint")
    model.load_state_dict(released.convert(state, config, expected, name), strict=True)
    torch.set_num_threads(1)
    model.eval()
    with np.load(folder / "expected.npz") as z:
        fx = {k: z[k] for k in z.files}
    x, y, pid = (torch.from_numpy(fx[k]).long() for k in ("inputs", "labels", "puzzle_identifiers"))
    carry = initial_state(model, x, y, pid)
    with torch.inference_mode():
        for t in range(1, int(fx["segments"]) + 1):
            carry, out = act_step(model, carry, x, y, pid, torch.Generator().manual_seed(t))
            for ours, theirs in ((out.out.logits, "logits"), (out.out.q_halt, "q_halt_logits"),
                                 (out.out.q_continue, "q_continue_logits")):
                np.testing.assert_allclose(ours.double().numpy(), fx[f"segment{t}/{theirs}"], rtol=0, atol=1e-5,
                                           err_msg=f"{name} segment{t}/{theirs}")
            assert bool(carry.halted.all()) == (t == int(fx["segments"]))     # eval runs every segment
    np.testing.assert_array_equal(out.out.logits.argmax(-1).numpy(), fx["final/predictions"])


def test_conversion_refuses_a_key_that_fits_nowhere_and_a_missing_one() -> None:
    folder = _fixture("sudoku-tiny")
    config = _config()
    expected = {k: v.shape for k, v in build_model(config, SHAPES["sudoku-tiny"]).state_dict().items()}
    state = released.read_weights(folder / "checkpoint")
    key = "_orig_mod.model.inner.q_head.bias"
    with pytest.raises(DataError, match=r"lacks _orig_mod\.model\.inner\.q_head\.bias .*our q_head\.bias"):
        released.convert({k: v for k, v in state.items() if k != key}, config, expected, "ck")
    with pytest.raises(DataError, match=r"'_orig_mod\.model\.inner\.H_level\.layers\.1\.mlp\.down_proj\.weight' "
                                        r"fits no weight"):
        released.convert(state | {"_orig_mod.model.inner.H_level.layers.1.mlp.down_proj.weight": torch.zeros(1)},
                         config, expected, "ck")
    with pytest.raises(DataError, match="no _orig_mod.model. prefix"):
        released.convert({k.removeprefix("_orig_mod."): v for k, v in state.items()}, config, expected, "ck")
    with pytest.raises(DataError, match=r"q_head\.weight has shape \(2, 65\), our q_head\.weight needs \(2, 64\)"):
        released.convert(state | {"_orig_mod.model.inner.q_head.weight": torch.zeros(2, 65)}, config, expected, "ck")


def test_architecture_check_names_the_field_and_both_values() -> None:
    arch = released.read_config(_fixture("sudoku-tiny"))["arch"]
    config = _config()
    for field, value, ours in (("H_layers", 4, "high_layers is 1"), ("L_cycles", 3, "low_steps is 2"),
                               ("hidden_size", 512, "hidden is 64"), ("expansion", 8, "mlp_inner is 256"),
                               ("num_heads", 8, "heads is 2"), ("rope_theta", 500.0, "rope_base is 10000")):
        with pytest.raises(ConfigError, match=rf"arch\.{field} is {value}\.?0? but models\.tiny\.{ours}"):
            check_arch(arch | {field: value}, config, "tiny", "ck")
    # The released 27M checkpoints carry no forward_dtype: the authors' bf16 for activations and carry alike.
    assert check_arch({k: v for k, v in arch.items() if k != "forward_dtype"}, config, "tiny", "ck") == "bf16-pure"
    with pytest.raises(ConfigError, match="forward_dtype is 'float16'"):
        check_arch(arch | {"forward_dtype": "float16"}, config, "tiny", "ck")


# ------------------------------------------------------------------ ARC rows: matched by name or refused

def _arc_data(project: Path, ours: list[str], test_ids: list[int]) -> SimpleNamespace:
    built = paths.built_dir("arc-x")
    built.mkdir(parents=True)
    (built / IDENTIFIERS).write_text(json.dumps(ours))
    return SimpleNamespace(name="arc-x", info={"kind": "arc"}, test=SimpleNamespace(puzzle_identifiers=test_ids))


def test_arc_rows_follow_the_identifier_names_and_refuse_unmatched_versions(project: Path) -> None:
    ck = ReleasedCheckpoint("ck-arc", "someone/ck-arc", "main", "arc-x", optional=(IDENTIFIERS,))
    raw = project / "raw"
    raw.mkdir()
    data = _arc_data(project, ["<blank>", "a", "b", "c"], [1, 2])
    with pytest.raises(DataError, match=f"ships no {IDENTIFIERS}"):
        released.puzzle_rows(ck, raw, data)
    (raw / IDENTIFIERS).write_text(json.dumps(["<blank>", "c", "x", "b", "a"]))
    rows, found = released.puzzle_rows(ck, raw, data)
    assert rows.tolist() == [0, 4, 3, 1] and "2 test versions" in found["identifiers"]
    (raw / IDENTIFIERS).write_text(json.dumps(["<blank>", "a", "c"]))            # their draw lacks our "b"
    with pytest.raises(DataError, match=r"1 of the 2 test versions .*'b'"):
        released.puzzle_rows(ck, raw, data)


# ------------------------------------------------------------------ the CLI: download, import, evaluate

CK = "ck-sudoku-tiny"


@pytest.fixture
def released_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project whose experiment `sudoku-released` imports the sudoku-tiny fixture (repo name `x/sudoku-tiny`)
    into a generated 9x9 Sudoku set, built."""
    _fixture("sudoku-tiny")
    monkeypatch.setitem(PUZZLES, "sudoku-tiny", PuzzleSet("sudoku-tiny", "sudoku", Generated(8, 4, seed=3),
                                                          augmentations=0))
    monkeypatch.setitem(RELEASED, CK, ReleasedCheckpoint(CK, "x/sudoku-tiny", "fixture", "sudoku-tiny"))
    raw = tiny_params(**{"sudoku-released": {"group": "demo", "dataset": "sudoku-tiny", "model": "tiny-released",
                                             "recipe": "tiny-carry", "seeds": [0], "released": CK}})
    raw["models"]["tiny-released"] = TINY
    raw["recipes"]["tiny-carry"] = TINY_PUZZLE_RECIPE
    write_params(project, raw)
    assert cli.main(["download", "sudoku-tiny"]) == 0 and cli.main(["build", "sudoku-tiny"]) == 0
    return project


def test_download_import_and_evaluate_a_released_checkpoint(released_project: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["download", CK, "--from", str(FIXTURES)]) == 0
    lock = json.loads(LOCK.read_text())
    sha = hashlib.sha256((FIXTURES / "sudoku-tiny/checkpoint").read_bytes()).hexdigest()
    assert lock[f"{CK}/checkpoint"]["sha256"] == sha
    assert cli.main(["train", "sudoku-released", "--seed", "0"]) == 0
    metrics = json.loads(paths.metrics_file("demo", "sudoku-released", 0).read_text())
    assert metrics["complete"] and metrics["epochs"] == 0 and metrics["precision"] == "fp32"
    assert metrics["provenance"]["checkpoint"] == {"repo": "x/sudoku-tiny", "revision": "fixture", "sha256": sha}
    assert cli.main(["evaluate", "sudoku-released", "--seed", "0"]) == 0
    result = json.loads(paths.eval_file("demo", "sudoku-released", 0).read_text())
    assert result["precision"] == "fp32 (CPU)" and 0 <= result["test_acc"] <= 1    # bf16 runs on CUDA only
    # The imported weights are the checkpoint's: the run's model file holds them, converted.
    payload = torch.load(paths.model_file("demo", "sudoku-released", 0), weights_only=False)
    theirs = released.read_weights(FIXTURES / "sudoku-tiny/checkpoint")["_orig_mod.model.inner.q_head.weight"]
    assert torch.equal(payload["state_dict"]["q_head.weight"], theirs)
    # An import trains nothing: no fingerprint.
    capsys.readouterr()
    assert cli.main(["fingerprint", "sudoku-released", "--seed", "0"]) == 2
    assert "imports the released checkpoint" in capsys.readouterr().err


def test_download_refuses_a_changed_file_and_keeps_the_verified_copy(released_project: Path, tmp_path: Path) -> None:
    assert cli.main(["download", CK, "--from", str(FIXTURES)]) == 0
    changed = tmp_path / "copy" / CK
    shutil.copytree(FIXTURES / "sudoku-tiny", changed)
    with open(changed / "checkpoint", "ab") as fh:
        fh.write(b"\0")
    assert cli.main(["download", CK, "--from", str(changed.parent)]) == 2
    kept = paths.raw_dir(CK) / "checkpoint"
    assert kept.read_bytes() == (FIXTURES / "sudoku-tiny/checkpoint").read_bytes()


def _corrupt_state(folder: Path, change) -> None:
    state = torch.load(folder / "checkpoint", weights_only=True)
    change(state)
    torch.save(state, folder / "checkpoint")


BAD = {
    "missing key": (lambda f: _corrupt_state(f, lambda s: s.pop("_orig_mod.model.inner.L_init")),
                    "lacks _orig_mod.model.inner.L_init"),
    "extra key": (lambda f: _corrupt_state(f, lambda s: s.update({"_orig_mod.model.inner.extra": torch.zeros(1)})),
                  "'_orig_mod.model.inner.extra' fits no weight"),
    "wrong shape": (lambda f: _corrupt_state(f, lambda s: s.update({"_orig_mod.model.inner.lm_head.weight":
                                                                    torch.zeros(12, 64)})),
                    "lm_head.weight has shape (12, 64)"),
    "other layer count": (lambda f: (f / "all_config.yaml").write_text(yaml.safe_dump(
        {**yaml.safe_load((f / "all_config.yaml").read_text()),
         "arch": {**yaml.safe_load((f / "all_config.yaml").read_text())["arch"], "L_layers": 4}})),
        "arch.L_layers is 4 but models.tiny-released.low_layers is 1"),
    "truncated": (lambda f: (f / "checkpoint").write_bytes((f / "checkpoint").read_bytes()[:5000]),
                  "not a readable torch state_dict"),
    "no config": (lambda f: (f / "all_config.yaml").unlink(), "all_config.yaml: missing"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_checkpoint_exits_2_naming_what_is_wrong_and_writes_nothing(
        released_project: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    raw = paths.raw_dir(CK)
    shutil.copytree(FIXTURES / "sudoku-tiny", raw)
    damage, message = BAD[case]
    damage(raw)
    capsys.readouterr()
    assert cli.main(["train", "sudoku-released", "--seed", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not paths.run_dir("demo", "sudoku-released", 0).exists()


# ------------------------------------------------------------------ the authors' crop of an ARC prediction

def _crop_as_written(grid: np.ndarray) -> np.ndarray:
    """REFERENCE II.4's crop, statement by statement (their arc_eval.ipynb), on token values."""
    max_area, best, num_c = 0, (0, 0), grid.shape[1]
    for num_r in range(1, grid.shape[0] + 1):
        for c in range(num_c):
            if not COLOR_OFFSET <= grid[num_r - 1, c] <= COLOR_OFFSET + 9:
                num_c = c
                break
        if num_r * num_c > max_area:
            max_area, best = num_r * num_c, (num_r, num_c)
    return grid[:best[0], :best[1]] - COLOR_OFFSET


def test_crop_is_the_authors_rule_on_malformed_predictions() -> None:
    pad, eos = 0, 1
    c = COLOR_OFFSET
    canvases = [
        np.array([[c, c + 1, eos], [c + 2, c + 3, eos], [eos, eos, eos]]),          # a clean 2x2 answer
        np.array([[c, c, c], [c, eos, c], [c, c, c]]),                               # a hole: 1x3 ties 3x1, first kept
        np.array([[c, c, c, eos], [c, c, c, c], [c, c, eos, eos], [c, pad, pad, pad]]),   # rows narrow: 2x3
        np.array([[pad, c], [c, c]]),                                                # starts with PAD: empty
        np.full((4, 4), c + 9),                                                      # all colour: the whole canvas
    ]
    rng = np.random.default_rng(0)
    canvases += [np.where(rng.random((6, 6)) < 0.15, rng.choice([pad, eos]), rng.integers(c, c + 10))
                 for _ in range(300)]
    for grid in canvases:
        np.testing.assert_array_equal(crop(grid), _crop_as_written(grid), err_msg=str(grid))
    assert crop(canvases[1]).shape == (1, 3) and crop(canvases[2]).shape == (2, 3) and crop(canvases[3]).size == 0
