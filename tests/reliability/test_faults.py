"""Graceful stop, nothing half-written, corrupted checkpoints, NaN/Inf, OOM, the run lock, no GPU/NVML/network."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import EXPERIMENT, GROUP, SEED, Training, clear_outputs, outcome, same, setup_run, train_cmd

from hrm.cli import main
from hrm.core import checkpoint, paths
from hrm.core.atomic import write_json
from hrm.core.errors import DiskFull
from hrm.core.locks import RunLock
from hrm.pipeline.config import load_params
from hrm.train import image as train

CKPT = paths.checkpoint_file(GROUP, EXPERIMENT, SEED)


def _reference(project: Path) -> dict:
    assert main(["train", EXPERIMENT, "--seed", str(SEED)]) == 0
    ref = outcome()
    clear_outputs()
    return ref


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_a_checkpoint_and_says_how_to_resume(project: Path, sig: signal.Signals, code: int) -> None:
    setup_run(project, epochs=3, batch_size=16)
    reference = _reference(project)
    run = Training(project)
    assert run.started.wait(60)
    run.proc.send_signal(sig)
    assert run.finish() == code
    last = [ln for ln in run.lines if ln.strip()][-1]
    assert f"stopped by {sig.name}" in last and "resume with `python -m hrm train digits-tiny --seed 0`" in last
    assert CKPT.exists() and not paths.metrics_file(GROUP, EXPERIMENT, SEED).exists()
    state = checkpoint.RunState(**checkpoint.read(CKPT)["state"])
    assert state.offset > 0 or state.epoch > 0                     # mid-epoch position recorded
    done = subprocess.run(train_cmd(), cwd=project, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert same(outcome(), reference)


class NoSpace(OSError):
    def __init__(self) -> None:
        super().__init__(errno.ENOSPC, "No space left on device")


def _no_temp_files(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_write_error_mid_file_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "metrics.json"
    write_json(target, {"good": 1})

    def half_then_fail(self: Path, data: bytes) -> int:
        with open(self, "wb") as fh:
            fh.write(data[: len(data) // 2])
        raise NoSpace()

    monkeypatch.setattr(Path, "write_bytes", half_then_fail)
    with pytest.raises(DiskFull):
        write_json(target, {"good": 2, "padding": "x" * 1000})
    assert json.loads(target.read_text()) == {"good": 1}
    _no_temp_files(tmp_path)


def test_failed_checkpoint_figure_and_build_writes_leave_old_files(project: Path) -> None:
    setup_run(project, epochs=1)
    # Checkpoint: the writer dies half-way; the earlier checkpoint survives intact.
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    checkpoint.save(CKPT, checkpoint.RunState("h", epoch=1), model, opt)
    real_open = open

    class HalfFile:
        def __init__(self, fh): self.fh = fh
        def __enter__(self): return self
        def __exit__(self, *a): self.fh.close()
        def write(self, data):
            self.fh.write(data[: len(data) // 2])
            raise NoSpace()

    with pytest.MonkeyPatch.context() as mp, pytest.raises(DiskFull):
        mp.setattr(checkpoint, "open", lambda p, m: HalfFile(real_open(p, m)), raising=False)
        checkpoint.save(CKPT, checkpoint.RunState("h", epoch=2), model, opt)
    assert checkpoint.read(checkpoint.previous(CKPT))["state"]["epoch"] == 1
    assert not CKPT.exists()                                       # never a truncated latest
    _no_temp_files(CKPT.parent)

    # Built arrays: the third array fails; the previous build stays whole.
    from hrm.data import build as build_mod

    before = (paths.built_dir("digits") / "test_x.npy").read_bytes()
    calls = []

    def failing_save(path, array):
        calls.append(path)
        if len(calls) == 3:
            Path(path).write_bytes(b"\x93NUMPY half")
            raise NoSpace()
        np.save(path, array)

    with pytest.MonkeyPatch.context() as mp, pytest.raises(DiskFull):
        mp.setattr(build_mod.np, "save", failing_save)
        build_mod.build("digits")
    assert (paths.built_dir("digits") / "test_x.npy").read_bytes() == before
    build_mod.load("digits")
    _no_temp_files(paths.built_dir("digits").parent)

    # Figures: savefig dies mid-write; no PNG (or the old one) is left.
    import matplotlib.figure

    from hrm.evaluate import figures

    out = project / "fig.png"
    figures.loss_trace(np.arange(1, 11), np.linspace(2, 1, 10), "t", out)
    good = out.read_bytes()

    def broken_savefig(self, fname, **kw):
        Path(fname).write_bytes(b"\x89PNG half")
        raise NoSpace()

    with pytest.MonkeyPatch.context() as mp, pytest.raises(DiskFull):
        mp.setattr(matplotlib.figure.Figure, "savefig", broken_savefig)
        figures.loss_trace(np.arange(1, 11), np.linspace(2, 1, 10), "t", out)
    assert out.read_bytes() == good
    _no_temp_files(project)


def test_corrupted_latest_checkpoint_falls_back_to_previous(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    setup_run(project, epochs=3, batch_size=128, log_every=100)
    reference = _reference(project)
    real_save, saves = checkpoint.save, []

    def save_twice_then_die(*a, **k):
        real_save(*a, **k)
        saves.append(1)
        if len(saves) == 2:
            raise KeyboardInterrupt   # dies right after the epoch-2 checkpoint

    monkeypatch.setattr(checkpoint, "save", save_twice_then_die)
    with pytest.raises(KeyboardInterrupt):
        train.train(load_params(), EXPERIMENT, SEED)
    monkeypatch.setattr(checkpoint, "save", real_save)
    blob = bytearray(CKPT.read_bytes())
    blob[len(blob) // 2] ^= 0xFF                                   # one flipped byte
    CKPT.write_bytes(bytes(blob))
    train.train(load_params(), EXPERIMENT, SEED)
    assert "checksum mismatch" in caplog.text and "trying the previous one" in caplog.text
    metrics = json.loads(paths.metrics_file(GROUP, EXPERIMENT, SEED).read_text())
    assert metrics["resumed_from"] == [[1, 0]]               # resumed from the previous checkpoint
    assert same(outcome(), reference)


def test_nan_loss_stops_naming_the_step_and_keeps_the_checkpoint(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    setup_run(project, epochs=3, batch_size=128, log_every=100)
    real_step, batches = train.BATCH_STEPS[False], []

    def poisoned(*args):
        loss, hits = real_step(*args)
        batches.append(1)
        return (loss * float("nan") if len(batches) == 12 + 5 else loss), hits   # epoch 2, batch 5

    monkeypatch.setitem(train.BATCH_STEPS, False, poisoned)
    assert main(["train", EXPERIMENT, "--seed", str(SEED)]) == 3
    err = capsys.readouterr().err
    assert "non-finite loss at epoch 2 batch 5" in err and "cross_entropy=nan" in err
    assert checkpoint.RunState(**checkpoint.read(CKPT)["state"]).epoch == 1   # last good one kept
    assert not paths.metrics_file(GROUP, EXPERIMENT, SEED).exists()


def test_out_of_memory_names_experiment_batch_size_and_key(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    setup_run(project, epochs=1)

    def oom(*args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setitem(train.BATCH_STEPS, False, oom)
    assert main(["train", EXPERIMENT, "--seed", str(SEED)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "digits-tiny seed 0" in err[0] and "batch size 32" in err[0]
    assert "recipes.tiny.batch_size" in err[0]
    run = paths.run_dir(GROUP, EXPERIMENT, SEED)
    assert not run.exists()                 # no partial outputs (the folder made for the lock is gone too)


def test_second_process_on_the_same_run_fails_fast(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup_run(project, epochs=1)
    with RunLock(paths.run_dir(GROUP, EXPERIMENT, SEED)):
        assert main(["train", EXPERIMENT, "--seed", str(SEED)]) == 2
    err = capsys.readouterr().err
    assert f"PID {os.getpid()}" in err and "in use by another run" in err
    assert main(["train", EXPERIMENT, "--seed", str(SEED)]) == 0   # free again once released


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_no_gpu_is_a_clear_error(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup_run(project, epochs=1)
    raw = (project / "params.yaml").read_text().replace("device: auto", "device: cuda")
    (project / "params.yaml").write_text(raw)
    assert main(["train", EXPERIMENT, "--seed", str(SEED)]) == 2
    assert "runtime.device: got 'cuda' but no CUDA device" in capsys.readouterr().err


def test_no_nvml_gives_null_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    import pynvml

    from hrm.core import gpu

    for name, value in (("reset_peak_memory_stats", None), ("get_device_name", "Fake GPU"),
                        ("max_memory_allocated", 3 << 20), ("max_memory_reserved", 4 << 20)):
        monkeypatch.setattr(torch.cuda, name, lambda *a, v=value: v)

    def missing(device):
        raise pynvml.NVMLError_LibraryNotFound()

    monkeypatch.setattr(gpu, "_nvml_handle", missing)
    with gpu.GpuMonitor(torch.device("cuda", 0), 0.05) as mon:
        pass
    facts = mon.facts()
    assert facts["device_name"] == "Fake GPU" and facts["torch_max_memory_allocated_mib"] == 3.0
    assert facts["nvml_peak_memory_used_mib"] is None and facts["energy_joules"] is None


def test_no_network_is_a_clear_error(project: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    assert main(["download", "mnist"]) == 2
    err = capsys.readouterr().err
    assert "name resolution" in err and "storage.googleapis.com" in err and "--from FOLDER" in err
    assert not any(paths.raw_dir("mnist").iterdir())
