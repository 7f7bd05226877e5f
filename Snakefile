"""Snakemake front end of the HRM pipeline (scheduling; DVC does versioning and caching).

The rules in workflow/rules/ take their paths from hrm.core.paths and their inputs from hrm.pipeline.stages,
the same module that generates dvc.yaml. Targets: all, demo, analyses, train_cifar, train_mnist,
train_sudoku, train_maze, train_arc, released (the authors' checkpoints, evaluated here).
Run `snakemake --cores 4 train_cifar` (profiles/default limits gpu=1).
"""


include: "workflow/rules/common.smk"


report: "workflow/report/workflow.rst"


wildcard_constraints:
    root="|".join(paths.GROUP_ROOTS.values()),
    experiment=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    seed=r"\d+",
    dataset=r"[A-Za-z0-9_-]+",


rule all:
    input:
        sorted(stages.outputs(TABLE)),


rule demo:
    input:
        group_targets("demo"),


# Every analysis and ablation at demo scale (about 25 minutes on 2 CPU cores); not part of the demo.
rule analyses:
    input:
        group_targets("analysis"),


rule train_cifar:
    input:
        train_targets("cifar10", "cifar100"),


rule cifar_cnn:
    input:
        cnn_cifar_targets(),


rule train_mnist:
    input:
        train_targets("mnist"),


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"


rule train_sudoku:
    input:
        train_targets("sudoku-extreme-1k"),


rule train_maze:
    input:
        train_targets("maze-hard-1k"),


rule train_arc:
    input:
        train_targets("arc1", "arc2"),


rule released:
    input:
        released_targets(),
