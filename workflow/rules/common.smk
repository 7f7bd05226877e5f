# Shared helpers: the params, the stage table and the functions that read them.

import re

from snakemake.exceptions import WorkflowError

from hrm.core import paths
from hrm.pipeline import stages, studies
from hrm.pipeline.studies import ANALYSES as ANALYSIS_KINDS
from hrm.pipeline.config import load_params
from hrm.core.gpu import count as gpu_count, jobs_use_gpu

PARAMS = load_params()
TABLE = stages.stage_table(PARAMS)
# GPUs. On SLURM (the profile's config gpu_nodes=true) the jobs run on GPU nodes, which SLURM hands out.
# On one machine the GPU count is `--config gpus=N`, else what NVML sees: at most that many GPU jobs run
# at once (the `gpu` resource's limit, unless --resources gpu=K is given), and each job takes free GPUs
# for itself with `hrm --gpu-slots N` (hrm.runtime.launch.pin: CUDA_VISIBLE_DEVICES). JOB_GPUS: whether
# train/evaluate jobs hold GPUs at all (runtime.device, and GPUs here or on the nodes).
SLURM = bool(config.get("gpu_nodes", False))
try:
    GPUS = 0 if SLURM else int(config.get("gpus", -1))
except ValueError:
    raise WorkflowError(f"--config gpus: got {config['gpus']!r}; the machine's GPU count, an integer >= 0")
GPUS = gpu_count() if GPUS < 0 else GPUS
JOB_GPUS = int(jobs_use_gpu(PARAMS.runtime.device, SLURM or GPUS > 0))
if JOB_GPUS and not SLURM and "gpu" not in workflow.global_resources:
    workflow.register_resource("gpu", max(GPUS, 1))
SLOTS = f" --gpu-slots {max(GPUS, 1)}" if JOB_GPUS and not SLURM else ""


def hrm_command(args):
    """`python -m hrm ARGS`, with --gpu-slots N where GPU jobs share this machine's GPUs (only then:
    a CPU machine's commands stay as they were, so Snakemake reruns nothing for this)."""
    return f"python -m hrm{SLOTS} {args}"


def _gpus(wc, training):
    """GPUs a job holds on one node: a training's processes, an evaluation or analysis one."""
    return (PARAMS.experiment(wc.experiment).processes if training else 1) * JOB_GPUS


def local_gpus(training=False):
    """The `gpu` resource: counted against the machine's GPUs; 0 on SLURM, where `gres` asks for them."""
    return lambda wc: 0 if SLURM else _gpus(wc, training)


def slurm_gres(training=False):
    """The `gres` resource the SLURM executor turns into --gres=gpu:K (K per node); empty elsewhere."""
    return lambda wc: f"gpu:{_gpus(wc, training)}" if SLURM and JOB_GPUS else ""


def job_threads(wc):
    """Cores a train/evaluate job takes (Snakemake sets OMP_NUM_THREADS to it, which torch follows).
    A GPU job or a demo or analysis run (a tiny model: 1.6x faster on 2 threads than on 1, so two side by side
    beat two in turn) takes one, so `--cores 2` runs two at once; a CPU paper run takes them all."""
    if JOB_GPUS or PARAMS.experiment(wc.experiment).group != "paper":
        return 1
    try:
        return workflow.cores
    except WorkflowError:  # --report and --summary run no job and are given no --cores
        return 1


def _names(study):
    """A regex matching exactly one study's experiments: their evaluations write different files."""
    names = [e.name for e in PARAMS.experiments.values() if e.study.name == study]
    return "|".join(re.escape(n) for n in names) or "(?!)"


def _spanning(several):
    """A regex of the experiments whose training spans several nodes (or of the others)."""
    names = [e.name for e in PARAMS.experiments.values() if (e.nodes > 1) == several]
    return "|".join(re.escape(n) for n in names) or "(?!)"


ONE_NODE_EXPERIMENTS, MULTI_NODE_EXPERIMENTS = _spanning(False), _spanning(True)
IMAGE_EXPERIMENTS = _names("image")
PUZZLE_EXPERIMENTS = _names("puzzle")
IMAGE, PUZZLE = studies.STUDIES["image"], studies.STUDIES["puzzle"]


def train_targets(*datasets):
    """metrics.json of every training run on the given data sets (pulls download and build); not the
    imports of released checkpoints (`released_targets`)."""
    return [
        str(paths.metrics_file(e.group, e.name, s))
        for e in PARAMS.experiments.values()
        if e.dataset in datasets and e.trains
        for s in e.seeds
    ]


def released_targets():
    """Evaluations of the authors' released checkpoints (download, import, evaluate with voting)."""
    return [
        str(paths.eval_file(e.group, e.name, s)) for e in PARAMS.experiments.values() if not e.trains for s in e.seeds
    ]


def group_targets(group):
    """Evaluations, analyses, figures and tables of one group."""
    return sorted(
        o
        for s in TABLE
        for o in s.outs + s.outs_no_cache
        if s.verb in ("evaluate", "analyze", "report") and paths.group_of_output(o) == group
    )


def cnn_cifar_targets():
    """Evaluations of the CIFAR CNN baselines (the study's fast half)."""
    return [
        str(paths.eval_file(e.group, e.name, s))
        for e in PARAMS.experiments.values()
        if e.dataset in ("cifar10", "cifar100") and e.model.kind == "cnn"
        for s in e.seeds
    ]


def experiment(wc):
    """The experiment of a job; its {root} wildcard must be the experiment's group root."""
    exp = PARAMS.experiment(wc.experiment)
    if paths.group_root(exp.group) != wc.root:
        raise ValueError(f"{wc.experiment} belongs under {paths.group_root(exp.group)}/, not {wc.root}/")
    return exp


# Snakemake's HTML report (`snakemake --report report.html demo`): figures by study, then experiment.
STUDY_TITLES = {"image": "Study I: image classification", "puzzle": "Study II: reasoning puzzles"}


def report_figures(study):
    """The evaluate rule's figures, each flagged for the report with its caption (workflow/report/).
    (`report` must not start a line here: Snakemake would read it as its `report:` directive.)"""
    flagged = []
    for name in studies.STUDIES[study].figures:
        labels = {"run": "{experiment} seed {seed}", "figure": name}
        where = dict(category=STUDY_TITLES[study], subcategory="{experiment}", labels=labels)
        flagged.append(report(paths.FIGURE.replace("{figure}", name), f"../report/{name}.rst", **where))
    return flagged


# What a training reads and writes, for both training rules (train: one node; train_nodes: several).
TRAIN_OUTPUTS = dict(model=paths.MODEL, metrics=paths.METRICS, history=paths.HISTORY, steps=paths.STEPS)
TRAIN_LOG = paths.RUN_LOG.format(verb="train", root="{root}", experiment="{experiment}", seed="{seed}")


def train_inputs(wc):
    return stages.train_deps(experiment(wc), int(wc.seed))
