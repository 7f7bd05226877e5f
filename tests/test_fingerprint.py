"""The run fingerprint (hrm.train.fingerprint): the same file for the same computation, whatever the
runtime; a different file for each kind of change a researcher makes to what training computes; and the
committed paper runs' fingerprints, recomputed here, equal to those dvc.lock records."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import REPO, tiny_params, write_params
from test_puzzle_train import TINY_PUZZLE_MODEL, TINY_PUZZLE_RECIPE
from test_trm import TRM_MODEL, TRM_RECIPE

from hrm import cli
from hrm.bench.relock import differences, rounding_only
from hrm.core import paths
from hrm.data.puzzles.sources import PUZZLES, Generated, PuzzleSet
from hrm.pipeline import stages
from hrm.pipeline.config import load_params
from hrm.pipeline.lockfile import explain, stale_marks
from hrm.train import fingerprint as fp

EXPERIMENTS = {
    "image-hrm": {"group": "demo", "dataset": "digits", "model": "hrm-digits", "recipe": "tiny", "seeds": [0],
                  "mode": "faithful"},
    "image-cnn": {"group": "demo", "dataset": "digits", "model": "tiny", "recipe": "tiny", "seeds": [0],
                  "mode": "faithful"},
    "sudoku-hrm": {"group": "demo", "dataset": "sudoku-tiny", "model": "tiny-puzzle", "recipe": "tiny-puzzle",
                   "seeds": [0]},
    "sudoku-trm": {"group": "demo", "dataset": "sudoku-tiny", "model": "tiny-trm", "recipe": "tiny-trm",
                   "seeds": [0]},
}


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], str]]:
    """A project with the digits and a tiny Sudoku built; `probe(name)` is the fingerprint file's text."""
    root = tmp_path_factory.mktemp("fingerprint")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("HRM_DATA_DIR", raising=False)
        mp.setitem(PUZZLES, "sudoku-tiny", PuzzleSet("sudoku-tiny", "sudoku", Generated(8, 4, seed=3),
                                                     augmentations=0))
        raw = tiny_params(**EXPERIMENTS)
        raw["models"] |= {"tiny-puzzle": TINY_PUZZLE_MODEL, "tiny-trm": TRM_MODEL}
        raw["recipes"] |= {"tiny-puzzle": TINY_PUZZLE_RECIPE, "tiny-trm": TRM_RECIPE}
        write_params(root, raw)
        for ds in ("digits", "sudoku-tiny"):
            assert cli.main(["download", ds]) == 0 and cli.main(["build", ds]) == 0
        yield lambda name: fp.text(fp.probe(load_params(), name, 0))


@pytest.fixture(scope="module")
def baseline(probed: Callable[[str], str]) -> dict[str, str]:
    return {name: probed(name) for name in EXPERIMENTS}


def test_same_computation_same_file_whatever_the_runtime(probed: Callable[[str], str], baseline: dict[str, str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    raw = yaml.safe_load(Path("params.yaml").read_text())
    raw["runtime"] |= {"deterministic": False, "num_threads": 2, "optimizer": "loop", "precision": "bf16"}
    write_params(Path.cwd(), raw)
    try:
        threads = torch.get_num_threads()
        for name in ("image-hrm", "sudoku-trm"):
            assert probed(name) == baseline[name], name
        assert torch.get_num_threads() == threads          # the probe's pinned settings do not leak
    finally:
        raw["runtime"] |= {"deterministic": True, "num_threads": 1, "optimizer": "foreach", "precision": "bf16"}
        write_params(Path.cwd(), raw)
    record = json.loads(baseline["sudoku-trm"])
    assert record["probe"]["digits"] == fp.DIGITS and len(record["steps"]) == fp.PROBE_BATCHES
    assert record["steps"][0]["updates"] == 1 and record["test"]["predictions"]


def _late(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` with its result nudged only from update 10 on: past every update the probe's steps make."""
    def changed(step: int, **kwargs: Any) -> Any:
        return fn(step, **kwargs) * (1.01 if step >= 10 else 1.0)
    return changed


def _patch_eps(mp: pytest.MonkeyPatch) -> None:
    from hrm.models.layers import RMSNorm
    forward = RMSNorm.forward
    mp.setattr(RMSNorm, "forward", lambda self, x: forward(self, x) * (1 + 1e-3))


def _patch_init(mp: pytest.MonkeyPatch) -> None:
    import hrm.models.hrm as hrm_model
    init = hrm_model.trunc_normal_
    mp.setattr(hrm_model, "trunc_normal_", lambda w, std, g: init(w, std * 1.01, g))


def _patch_loss(mp: pytest.MonkeyPatch) -> None:
    import hrm.train.puzzle as puzzle
    loss = puzzle.act_loss
    def weighted(*args: Any) -> Any:         # the halting BCE weighted 1 instead of 0.5 (Adam ignores a mere scale)
        out = loss(*args)
        out.total = out.total + 0.5 * out.q_halt
        return out
    mp.setattr(puzzle, "act_loss", weighted)


def _patch_optimizer(mp: pytest.MonkeyPatch) -> None:
    import hrm.train.image as image
    adamw = image.adamw
    mp.setattr(image, "adamw", lambda params, lr, betas, *rest: adamw(params, lr, (0.8, betas[1]), *rest))


def _patch_schedule(mp: pytest.MonkeyPatch) -> None:
    import hrm.train.image as image
    mp.setattr(image, "lr_at", _late(image.lr_at))


def _patch_order(mp: pytest.MonkeyPatch) -> None:
    import hrm.data.puzzles.stream as stream
    examples = stream.epoch_examples
    mp.setattr(stream, "epoch_examples", lambda split, seed, epoch: examples(split, seed + (epoch > 1), epoch))


def _patch_halting(mp: pytest.MonkeyPatch) -> None:
    import hrm.models.act as act
    mp.setattr(act, "wants_halt", lambda c, q_halt, q_continue: q_halt > q_continue - 0.5)


def _patch_ema(mp: pytest.MonkeyPatch) -> None:
    from hrm.train.ema import EMA
    init = EMA.__init__
    mp.setattr(EMA, "__init__", lambda self, model, rate: init(self, model, rate * 0.99))


def _patch_cosmetic(mp: pytest.MonkeyPatch) -> None:
    """A refactor that cannot change a number: the progress bar and the provenance record differ."""
    import hrm.core.progress as progress
    import hrm.core.provenance as provenance
    mp.setattr(progress.Progress, "advance", lambda self, n, note="": None)
    mp.setattr(provenance, "record", lambda *a, **k: {"refactored": True})


# (what a researcher changes, the run it shows on, the fingerprint sections that must move)
CHANGES = {
    "model (norm)": (_patch_eps, "image-hrm", {"steps", "weights", "test"}),
    "init": (_patch_init, "image-hrm", {"init", "steps", "weights", "test"}),
    "loss": (_patch_loss, "sudoku-hrm", {"steps", "weights"}),
    "optimizer": (_patch_optimizer, "image-cnn", {"weights"}),
    "schedule (late)": (_patch_schedule, "image-hrm", {"schedule"}),
    "data order (later epochs)": (_patch_order, "sudoku-hrm", {"data"}),
    "halting": (_patch_halting, "sudoku-hrm", {"steps"}),
    "EMA": (_patch_ema, "sudoku-trm", {"weights", "test"}),
}


@pytest.mark.parametrize("change", CHANGES)
def test_each_kind_of_change_moves_the_fingerprint(change: str, probed: Callable[[str], str],
                                                   baseline: dict[str, str]) -> None:
    patch, name, sections = CHANGES[change]
    with pytest.MonkeyPatch.context() as mp:
        patch(mp)
        changed = probed(name)
    diffs = differences(json.loads(baseline[name]), json.loads(changed))
    moved = {key.split(".")[0].split("[")[0] for key, *_ in diffs}
    assert sections <= moved, (change, sorted(moved))


def test_a_refactor_leaves_the_file_byte_identical(probed: Callable[[str], str], baseline: dict[str, str]) -> None:
    with pytest.MonkeyPatch.context() as mp:
        _patch_cosmetic(mp)
        assert probed("image-hrm") == baseline["image-hrm"]
        assert probed("sudoku-trm") == baseline["sudoku-trm"]


def test_fingerprint_verb_writes_the_file_and_refuses_missing_data(probed: Callable[[str], str],
                                                                  baseline: dict[str, str],
                                                                  capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["fingerprint", "sudoku-hrm", "--seed", "0"]) == 0
    assert paths.fingerprint_file("demo", "sudoku-hrm", 0).read_text() == baseline["sudoku-hrm"]
    raw = yaml.safe_load(Path("params.yaml").read_text())
    raw["experiments"]["maze-hrm"] = {**EXPERIMENTS["sudoku-hrm"], "dataset": "maze-demo"}
    write_params(Path.cwd(), raw)
    try:
        assert cli.main(["fingerprint", "maze-hrm", "--seed", "0"]) == 2
        assert "data/built/maze-demo" in capsys.readouterr().err
        assert not paths.fingerprint_file("demo", "maze-hrm", 0).exists()
    finally:
        del raw["experiments"]["maze-hrm"]
        write_params(Path.cwd(), raw)


def test_rounding_is_told_apart_from_a_changed_computation() -> None:
    old = {"run": {"batches": 10}, "steps": [{"loss": 2.30259, "halted": 3}], "probe": {"version": 1}}
    near = {"run": {"batches": 10}, "steps": [{"loss": 2.30261, "halted": 3}], "probe": {"version": 2}}
    assert [k for k, *_ in differences(old, near)] == ["steps[0].loss"]        # the probe's own fields ignored
    assert rounding_only(differences(old, near))
    assert not rounding_only(differences(old, {**near, "run": {"batches": 11}}))          # an exact section
    assert not rounding_only(differences(old, {**near, "steps": [{"loss": 2.4, "halted": 3}]}))
    assert not rounding_only(differences(old, {**near, "steps": [{"loss": 2.30259, "halted": 4}]}))


def test_status_tells_not_here_apart_from_changed() -> None:
    fresh = [{"changed deps": {"data/built/mnist": "deleted"}},
             {"changed outs": {"results/runs/mnist-hrm/seed42/model.pt": "not in cache"}}]
    assert explain(fresh).startswith("not here (dvc pull, or rebuild/retrain): data/built/mnist")
    changed = [{"changed deps": {"results/runs/x/seed0/fingerprint.json": "modified",
                                 "params.yaml": {"recipes.mnist-hrm.lr": "modified"}}}]
    assert explain(changed) == "changed: computation (fingerprint modified), params recipes.mnist-hrm.lr modified"


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_committed_paper_fingerprints_equal_what_the_code_computes(mnist_dir: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Every committed paper run whose data is at hand (MNIST): the fingerprint recomputed with the code
    here is byte-identical to the committed file, whose md5 is the one dvc.lock keys the training on. A
    change to what training computes fails here until the run is retrained, relocked, or marked stale
    (`hrm relock --stale`: then the audit page must say so, and the committed file is what the code computes now)."""
    params = load_params(REPO / "params.yaml")
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    runs = [(e, s) for e in params.experiments.values() if e.group == "paper" and e.dataset == "mnist"
            for s in e.seeds if f"train-{stages.run_name(e, s)}" in lock]
    assert len(runs) >= 5
    monkeypatch.chdir(REPO)
    stale = stale_marks("paper")
    audit = paths.audit_file("paper").read_text()
    (tmp_path / "src").symlink_to(REPO / "src")
    (tmp_path / "params.yaml").write_bytes((REPO / "params.yaml").read_bytes())
    monkeypatch.chdir(tmp_path)
    assert cli.main(["download", "mnist", "--from", str(mnist_dir)]) == 0 and cli.main(["build", "mnist"]) == 0
    data = None
    for exp, seed in runs:
        stage = f"train-{stages.run_name(exp, seed)}"
        committed = REPO / paths.fingerprint_file(exp.group, exp.name, seed)
        keyed = [d["md5"] for d in lock[stage]["deps"] if d["path"] == str(paths.fingerprint_file(exp.group, exp.name,
                                                                                                   seed))]
        if stage in stale:
            assert f"`dvc repro {stage}`" in audit and f"({stale[stage]})" in audit, f"{stage}: stale, not in the audit"
        else:
            assert keyed == [_md5(committed)], f"dvc.lock does not key {stage} on its committed fingerprint"
        if data is None or data[0] != exp.dataset:
            from hrm.data import build
            data = (exp.dataset, build.load(exp.dataset))
        text = fp.text(fp.probe(params, exp.name, seed, data[1]))
        if text != committed.read_text():
            diffs = differences(json.loads(committed.read_text()), json.loads(text))
            pytest.fail(f"{exp.name} seed {seed}: the code here computes another fingerprint than the committed run "
                        f"({len(diffs)} fields, first {diffs[:3]}); retrain it, or if you know why, `hrm relock "
                        f"{exp.name} --seed {seed}` (--stale REASON to label it instead)")
