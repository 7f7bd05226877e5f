"""`python -m hrm STAGE ...` (also `hrm`): the one entry point for people, DVC, Snakemake and CI.

Every command validates the params file first and writes nothing when it refuses. Modules that
import torch are imported inside the handlers so that `--help`, `check` and `describe` stay fast.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from hrm.core import paths
from hrm.core.errors import ConfigError, HrmError, storage_error
from hrm.data.puzzles.sources import RELEASED
from hrm.pipeline import stages, studies
from hrm.pipeline.config import DEFAULT_PARAMS, SEED_LIMIT, Params, analysis_models, load_params

log = logging.getLogger("hrm")


def _seed(params: Params, name: str, seed: int) -> int:
    exp = params.experiment(name)
    if not 0 <= seed < SEED_LIMIT:
        raise ConfigError(f"--seed: got {seed}; must be >= 0 and < 2**63 (torch and numpy seed from it)")
    if seed not in exp.seeds:
        log.warning("seed %d is not in experiments.%s.seeds %s: this run is outside the DAG and its reports",
                    seed, name, list(exp.seeds))
    return seed


def cmd_download(params: Params, args: argparse.Namespace) -> int:
    module = (studies.RELEASED_MODULES["download"] if args.dataset in RELEASED
              else studies.of_dataset(args.dataset).modules["download"])
    importlib.import_module(module).download(args.dataset, args.source, args.relock)
    return 0


def cmd_build(params: Params, args: argparse.Namespace) -> int:
    studies.of_dataset(args.dataset).verb("build")(args.dataset)
    return 0


def _run_verb(verb: str, params: Params, args: argparse.Namespace) -> int:
    from hrm.runtime.speed import attention  # imports torch: only for the verbs that run a model

    seed = _seed(params, args.experiment, args.seed)
    exp = params.experiment(args.experiment)
    with attention(params.runtime.attention):
        exp.verb(verb)(params, args.experiment, seed)
    return 0


def cmd_train(params: Params, args: argparse.Namespace) -> int:
    from hrm.runtime import launch

    exp = params.experiment(args.experiment)
    if exp.world > 1 and not launch.launched():        # this process starts the ranks and waits for them
        _seed(params, args.experiment, args.seed)
        return launch.torchrun(exp, args.argv)
    return _run_verb("train", params, args)


def _pin(params: Params, args: argparse.Namespace) -> None:
    """--gpu-slots N: hold the GPUs this job uses (a training's processes, else one) among the machine's N."""
    from hrm.runtime import launch

    if args.gpu_slots is None or launch.launched() or not getattr(args, "experiment", None):
        return                     # a rank inherits its launcher's GPUs; download, build, report use none
    if args.gpu_slots < 1:
        raise ConfigError(f"--gpu-slots: got {args.gpu_slots}; must be >= 1 (the machine's GPU count)")
    exp = params.experiment(args.experiment)
    launch.pin(exp.processes if args.command == "train" else 1, args.gpu_slots)


def _trains(params: Params, name: str, verb: str) -> None:
    exp = params.experiment(name)
    if not exp.trains:
        raise ConfigError(f"{verb} {name}: this experiment imports the released checkpoint {exp.released} "
                          f"(experiments.{name}.released); it trains nothing, so there is nothing to {verb}")


def cmd_fingerprint(params: Params, args: argparse.Namespace) -> int:
    from hrm.train.fingerprint import fingerprint

    _trains(params, args.experiment, "fingerprint")
    fingerprint(params, args.experiment, _seed(params, args.experiment, args.seed))
    return 0


def cmd_relock(params: Params, args: argparse.Namespace) -> int:
    from hrm.bench.relock import relock

    _trains(params, args.experiment, "relock")
    if args.batches < 1:
        raise ConfigError(f"relock --batches: got {args.batches}; must be >= 1")
    return relock(params, args.experiment, _seed(params, args.experiment, args.seed), args.batches, args.accept,
                  args.stale)


def cmd_status(params: Params, args: argparse.Namespace) -> int:
    from hrm.pipeline.lockfile import status

    return status(params, args.group)


def cmd_evaluate(params: Params, args: argparse.Namespace) -> int:
    return _run_verb("evaluate", params, args)


def cmd_analyze(params: Params, args: argparse.Namespace) -> int:
    from hrm.runtime.speed import attention

    exp = params.experiment(args.experiment)
    if args.kind not in exp.analyses:
        log.warning("%s is not in experiments.%s.analyses %s: this result is outside the DAG and its reports",
                    args.kind, args.experiment, list(exp.analyses))
    models = analysis_models(args.kind)
    if exp.model.kind not in models:
        raise ConfigError(f"analyze {args.kind}: needs a model of kind {' or '.join(models)}; experiment "
                          f"{args.experiment!r} has model kind {exp.model.kind}")
    seed = _seed(params, args.experiment, args.seed)
    with attention(params.runtime.attention):
        studies.analysis(args.kind)(params, args.experiment, seed)
    return 0


def cmd_report(params: Params, args: argparse.Namespace) -> int:
    from hrm.report.audit import publish

    publish(params, args.group)
    return 0


def cmd_bench(params: Params, args: argparse.Namespace) -> int:
    if args.what == "build":
        from hrm.bench.build import main

        return main(args.dataset, args.workers)
    if args.what == "gpu-check":
        from hrm.bench.check import gpu_check

        return gpu_check(args.params, args.steps)
    if args.steps < 1 or args.warmup < 0 or (args.batch is not None and args.batch < 1):
        raise ConfigError(f"bench {args.what}: --steps must be >= 1, --warmup >= 0 and --batch >= 1; got "
                          f"{args.steps}, {args.warmup}, {args.batch}")
    if not args.experiment:
        raise ConfigError(f"bench {args.what}: name an experiment (one of: {', '.join(params.experiments)})")
    params.experiment(args.experiment)
    if args.what == "replay":
        from hrm.bench.train import replay

        if args.seed is None:
            raise ConfigError("bench replay: --seed is required (the finished run to compare with)")
        result = replay(params, args.experiment, args.seed, args.steps)
        print(json.dumps({k: v for k, v in result.items() if k not in ("replayed", "committed")}))
        return 0 if result["same"] else 1
    if args.what == "memory":
        from hrm.bench.memory import bench_memory

        depths = tuple(int(d) for d in args.depths.split(","))
        print(json.dumps(bench_memory(params, args.experiment, depths, args.batch, args.save), indent=1))
        return 0
    if args.what == "evaluate":
        from hrm.bench.evaluate import bench_evaluate

        if args.examples is not None and args.examples < 1:
            raise ConfigError(f"bench evaluate: --examples must be >= 1; got {args.examples}")
        print(json.dumps(bench_evaluate(params, args.experiment, args.examples, args.synthetic, args.save), indent=1))
        return 0
    from hrm.bench.train import bench_train

    result = bench_train(params, args.experiment, args.steps, args.warmup, args.synthetic, args.save, args.batch)
    print(json.dumps(result, indent=1))
    return 0


def cmd_check(params: Params, args: argparse.Namespace) -> int:
    print(f"{params.path}: OK ({len(params.experiments)} experiments, {len(params.models)} models, "
          f"{len(params.recipes)} recipes)")
    return 0


def describe(params: Params, name: str) -> dict[str, object]:
    from hrm.models.registry import count_params

    exp = params.experiment(name)
    runs = {}
    for seed in exp.seeds:
        cached, audited = stages.train_outputs(exp, seed)
        runs[str(seed)] = {"model": cached[0], "train": audited, "evaluate": stages.evaluate_outputs(exp, seed)}
    shape = studies.shape(exp.dataset)
    data = {"name": exp.dataset, **{k: v for k, v in dataclasses.asdict(shape).items() if v},
            "spec": repr(exp.study.datasets[exp.dataset]),
            "raw": str(paths.raw_dir(exp.dataset)), "built": str(paths.built_dir(exp.dataset))}
    return {"experiment": name, "study": exp.study.name, "config": exp.as_dict(), "params_hash": exp.params_hash(),
            "dataset": data, "outputs": runs, "params": count_params(exp.model, shape)}


def cmd_describe(params: Params, args: argparse.Namespace) -> int:
    print(json.dumps(describe(params, args.experiment), indent=2))
    return 0


def cmd_dvc_yaml(params: Params, args: argparse.Namespace) -> int:
    text = stages.dvc_yaml(params)
    if args.check:
        current = stages.DVC_YAML.read_text() if stages.DVC_YAML.exists() else ""
        if current != text:
            print(f"{stages.DVC_YAML} is stale: run `hrm dvc-yaml` and commit it", file=sys.stderr)
            return 1
        print(f"{stages.DVC_YAML} is up to date ({len(stages.stage_table(params))} stages)")
        return 0
    from hrm.core.atomic import write_text

    write_text(stages.DVC_YAML, text)
    print(f"wrote {stages.DVC_YAML} ({len(stages.stage_table(params))} stages)")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hrm", description="Reproducible pipeline for the HRM studies.")
    p.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="params file (default: params.yaml)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--gpu-slots", type=int, default=None, metavar="N",
                   help="this machine has N GPUs shared by concurrent jobs: take free ones for this job and set "
                        "CUDA_VISIBLE_DEVICES (Snakemake passes it)")
    sub = p.add_subparsers(dest="command", required=True, metavar="STAGE")
    # `--params FILE` is accepted after the verb too; SUPPRESS keeps the verb from resetting it.
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--params", type=Path, default=argparse.SUPPRESS, help="params file (default: params.yaml)")

    def add(name: str, fn: object, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help, parents=[after])
        sp.set_defaults(fn=fn)
        return sp

    sp = add("download", cmd_download, "fetch a data set's raw files, verified (md5 or the sources lock)")
    sp.add_argument("dataset", help=f"one of: {', '.join(studies.ALL_DATASETS)}; or a released checkpoint: "
                    f"{', '.join(RELEASED)}")
    sp.add_argument("--from", dest="source", type=Path, default=None,
                    help="folder with verified copies (also $HRM_DATA_DIR); no network needed")
    sp.add_argument("--relock", action="store_true",
                    help="record this fetch's sha256 in workflow/sources.lock in place of the data set's entries "
                         "(a source that changed on purpose); commit the lock after")
    sp = add("build", cmd_build, "turn raw files into arrays and normalisation statistics")
    sp.add_argument("dataset", help=f"one of: {', '.join(studies.ALL_DATASETS)}")
    for name, fn, text in (("fingerprint", cmd_fingerprint, "write what a run's computation gives on a fixed "
                            "probe (the train stage's key; CPU, seconds)"),
                           ("train", cmd_train, "train one run (resumes from its checkpoint)"),
                           ("evaluate", cmd_evaluate, "evaluate a trained run and draw its figures"),
                           ("relock", cmd_relock, "explain how a committed run's fingerprint moved and, if its "
                            "computation did not (replayed), record the new one in dvc.lock; exit 1 if refused")):
        sp = add(name, fn, text)
        sp.add_argument("experiment", help="a key of the experiments section")
        sp.add_argument("--seed", type=int, required=True, help="one of the experiment's seeds")
        if name == "relock":
            sp.add_argument("--batches", type=int, default=12, help="full batches replayed against steps.csv")
            sp.add_argument("--accept", action="store_true", help="take differences of rounding size (a platform "
                            "change) as the same computation")
            sp.add_argument("--stale", metavar="REASON", default=None, help="if refused, label the committed run "
                            "stale in the group's stale.json (the audit page shows it) until it is retrained")
    sp = add("status", cmd_status, "what `dvc repro` would rerun and why: changed (code computation, params, "
             "data) or not here (pull or retrain)")
    sp.add_argument("--group", choices=list(paths.GROUP_ROOTS), default=None, help="only this group's stages")
    sp = add("analyze", cmd_analyze, "analyse a trained run: " + "; ".join(
        f"{k}: {v[1]}" for k, v in studies.ANALYSES.items()))
    sp.add_argument("kind", choices=list(studies.ANALYSES))
    sp.add_argument("experiment", help="a key of the experiments section")
    sp.add_argument("--seed", type=int, required=True, help="one of the experiment's seeds")
    sp = add("report", cmd_report, "write the paper-vs-reproduced tables of a group")
    sp.add_argument("group", choices=list(paths.GROUP_ROOTS))
    sp = add("bench", cmd_bench, "benchmarks that print measurements (JSON): build (the ARC build), train "
             "(N warm steps of an experiment), replay (N steps against a finished run's losses), memory "
             "(memory vs N*T), evaluate (a puzzle evaluation's time, projected to the full test set), gpu-check (the "
             "GPU acceptance check)")
    sp.add_argument("what", choices=["build", "train", "replay", "memory", "evaluate", "gpu-check"])
    sp.add_argument("experiment", nargs="?", help="train, memory: a key of the experiments section")
    sp.add_argument("--steps", type=int, default=20, help="train, gpu-check: timed steps; replay: batches (default 20)")
    sp.add_argument("--seed", type=int, default=None, help="replay: the finished run (exit 1 if its losses differ)")
    sp.add_argument("--warmup", type=int, default=3, help="train: untimed steps first (default 3)")
    sp.add_argument("--synthetic", action="store_true", help="train, evaluate: random data even if the set is built")
    sp.add_argument("--examples", type=int, default=None,
                    help="evaluate: test examples timed (default: 4 evaluation batches)")
    sp.add_argument("--depths", default="4,8,16,32", help="memory: values of N*T (default 4,8,16,32)")
    sp.add_argument("--batch", type=int, default=None, help="train, memory: batch (default: the recipe's)")
    sp.add_argument("--save", action="store_true",
                    help="train, memory, evaluate: also write results/bench/ (JSON, figure)")
    sp.add_argument("--dataset", default="arc1", help="build: an ARC data set, downloaded (default arc1)")
    sp.add_argument("--workers", type=int, default=None, help="build: processes (default: every core)")
    add("check", cmd_check, "validate the params file (exit 2 with the offending key)")
    sp = add("describe", cmd_describe, "print an experiment's resolved config, data, outputs and parameter count")
    sp.add_argument("experiment")
    sp = add("dvc-yaml", cmd_dvc_yaml, "write dvc.yaml from the stage table")
    sp.add_argument("--check", action="store_true", help="exit 1 if the committed dvc.yaml is stale")
    return p


def _fail(command: str, exc: HrmError) -> int:
    message = str(exc).replace("\n", "\\n")   # one line, whatever the offending key holds
    print(f"hrm {command}: error: {message}", file=sys.stderr)
    return exc.exit_code


# Verbs that run as DVC stages; under DVC each writes its stage's log file (the file its Snakemake rule writes).
STAGE_VERBS = ("download", "build", "fingerprint", "train", "evaluate", "analyze", "report")


class _Tee:
    """A text stream that writes to the terminal's stream and to a log file."""

    def __init__(self, stream: TextIO, log: TextIO) -> None:
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.log.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.log.flush()
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextlib.contextmanager
def _stage_log(params: Params, args: argparse.Namespace) -> Iterator[None]:
    """DVC names the stage it runs in $DVC_STAGE and keeps no log of its own: there, what the verb prints
    (its log lines, its one-line error) also goes to the stage's log file (hrm.pipeline.stages.log_file).
    Not in torchrun's ranks (LOCAL_RANK): the launching process writes it."""
    if not os.environ.get("DVC_STAGE") or os.environ.get("LOCAL_RANK") or args.command not in STAGE_VERBS:
        yield
        return
    name = getattr(args, "dataset", None) or getattr(args, "group", None) or args.experiment
    path = stages.log_file(params, args.command, name, getattr(args, "seed", None), getattr(args, "kind", None))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as log:
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"))
        logging.getLogger().addHandler(handler)
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)   # type: ignore[assignment]
        try:
            yield
        finally:
            sys.stdout, sys.stderr = out, err
            logging.getLogger().removeHandler(handler)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    args.argv = list(argv)            # what torchrun's ranks rerun (hrm.runtime.launch)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        params = load_params(args.params)
    except HrmError as exc:
        return _fail(args.command, exc)
    with _stage_log(params, args):
        return _run(params, args)


def _run(params: Params, args: argparse.Namespace) -> int:
    from hrm.core import progress, provenance

    provenance.set_command(args.argv)
    try:
        progress.configure(params.runtime.progress_seconds)
        _pin(params, args)
        return int(args.fn(params, args))
    except OSError as exc:
        named = storage_error(exc, "a file of this stage")
        if named is None:
            raise
        return _fail(args.command, named)
    except HrmError as exc:
        return _fail(args.command, exc)
    except KeyboardInterrupt:
        print(f"hrm {args.command}: interrupted", file=sys.stderr)
        return 130
