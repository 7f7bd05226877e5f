# train -> evaluate, one job per (experiment, seed). {root} must be the experiment's group root.
# Only jobs that hold a GPU count against the gpu=1 limit (profiles/default); CPU jobs share the cores.


rule train:
    input:
        lambda wc: stages.train_deps(experiment(wc)),
    output:
        model=paths.MODEL,
        metrics=paths.METRICS,
        history=paths.HISTORY,
        steps=paths.STEPS,
    log:
        paths.RUN_LOG.format(verb="train", root="{root}", experiment="{experiment}", seed="{seed}"),
    conda:
        "../envs/hrm.yaml"
    threads: job_threads
    resources:
        gpu=JOB_GPUS,
    params:
        # Changing the experiment's params changes this hash, which makes Snakemake rerun the job.
        config=lambda wc: experiment(wc).params_hash(),
    shell:
        "python -m hrm train {wildcards.experiment} --seed {wildcards.seed} > {log} 2>&1"


rule evaluate:
    input:
        lambda wc: stages.evaluate_deps(experiment(wc), int(wc.seed)),
    output:
        result=paths.EVAL,
        figures=report_figures("image"),
        plots=expand(paths.PLOT_DATA, plot=IMAGE.plot_data, allow_missing=True),
    log:
        paths.RUN_LOG.format(verb="evaluate", root="{root}", experiment="{experiment}", seed="{seed}"),
    wildcard_constraints:
        experiment=IMAGE_EXPERIMENTS,
    conda:
        "../envs/hrm.yaml"
    threads: job_threads
    resources:
        gpu=JOB_GPUS,
    params:
        config=lambda wc: experiment(wc).params_hash(),
    shell:
        "python -m hrm evaluate {wildcards.experiment} --seed {wildcards.seed} > {log} 2>&1"


rule evaluate_puzzle:
    input:
        lambda wc: stages.evaluate_deps(experiment(wc), int(wc.seed)),
    output:
        result=paths.EVAL,
        predictions=paths.PREDICTIONS,
        figures=report_figures("puzzle"),
        plots=expand(paths.PLOT_DATA, plot=PUZZLE.plot_data, allow_missing=True),
    log:
        paths.RUN_LOG.format(verb="evaluate", root="{root}", experiment="{experiment}", seed="{seed}"),
    wildcard_constraints:
        experiment=PUZZLE_EXPERIMENTS,
    conda:
        "../envs/hrm.yaml"
    threads: job_threads
    resources:
        gpu=JOB_GPUS,
    params:
        config=lambda wc: experiment(wc).params_hash(),
    shell:
        "python -m hrm evaluate {wildcards.experiment} --seed {wildcards.seed} > {log} 2>&1"


rule analyze:
    input:
        lambda wc: stages.analyze_deps(experiment(wc), int(wc.seed), wc.analysis),
    output:
        result=paths.ANALYSIS,
        figure=report(
            paths.ANALYSIS_FIGURE,
            caption="../report/analysis.rst",
            category="Analyses",
            subcategory="{experiment}",
            labels={"run": "{experiment} seed {seed}", "analysis": "{analysis}"},
        ),
    log:
        paths.RUN_LOG.format(verb="analyze-{analysis}", root="{root}", experiment="{experiment}", seed="{seed}"),
    wildcard_constraints:
        analysis="|".join(ANALYSIS_KINDS),
    conda:
        "../envs/hrm.yaml"
    threads: job_threads
    resources:
        gpu=JOB_GPUS,
    params:
        config=lambda wc: experiment(wc).params_hash(),
    shell:
        "python -m hrm analyze {wildcards.analysis} {wildcards.experiment} --seed {wildcards.seed} > {log} 2>&1"
