# fingerprint -> train -> evaluate, one job per (experiment, seed). {root} must be the experiment's group root.
# GPU jobs count against the machine's GPUs (the `gpu` resource, common.smk) and take free ones
# (--gpu-slots, in the command only when there are GPUs, so that a CPU machine's commands and
# params are what they were and Snakemake reruns nothing); on SLURM they ask for theirs (`gres`).


# The run's computation on a fixed probe (hrm.train.fingerprint), the training's only code input. A
# checkpoint: Snakemake re-reads the DAG after it, so a rewritten but byte-identical fingerprint (an edit that
# changes no number) leaves the training up to date (checksum of a small input); a plain rule would rerun it.
# Always on the CPU, one thread.
checkpoint fingerprint:
    input:
        lambda wc: stages.fingerprint_deps(experiment(wc)),
    output:
        paths.FINGERPRINT,
    log:
        paths.RUN_LOG.format(verb="fingerprint", root="{root}", experiment="{experiment}", seed="{seed}"),
    conda:
        "../envs/hrm.yaml"
    params:
        config=lambda wc: experiment(wc).params_hash(),
    shell:
        "python -m hrm fingerprint {wildcards.experiment} --seed {wildcards.seed} > {log} 2>&1"


rule train:
    input:
        train_inputs,
    output:
        **TRAIN_OUTPUTS,
    log:
        TRAIN_LOG,
    wildcard_constraints:
        experiment=ONE_NODE_EXPERIMENTS,
    conda:
        "../envs/hrm.yaml"
    threads: job_threads
    resources:
        gpu=local_gpus(training=True),
        gres=slurm_gres(training=True),
    params:
        # Changing the experiment's params changes this hash, which makes Snakemake rerun the job.
        config=lambda wc: experiment(wc).params_hash(),
    shell:
        hrm_command("train {wildcards.experiment} --seed {wildcards.seed} > {log} 2>&1")


# A training over several nodes (experiments.X.nodes > 1; SLURM only): one task per node, each of
# which runs torchrun for its GPUs (hrm.runtime.launch). `mpi` makes the SLURM executor run the command as
# it is (srun inside); tasks = nodes; tasks_per_gpu 0 keeps it from asking for a task per GPU.
rule train_nodes:
    input:
        train_inputs,
    output:
        **TRAIN_OUTPUTS,
    log:
        TRAIN_LOG,
    wildcard_constraints:
        experiment=MULTI_NODE_EXPERIMENTS,
    conda:
        "../envs/hrm.yaml"
    resources:
        gpu=0,
        gres=slurm_gres(training=True),
        nodes=lambda wc: experiment(wc).nodes,
        tasks=lambda wc: experiment(wc).nodes,
        tasks_per_gpu=0,
        mpi="srun",
    params:
        config=lambda wc: experiment(wc).params_hash(),
    shell:
        "srun --nodes={resources.nodes} --ntasks-per-node=1 python -m hrm train {wildcards.experiment} "
        "--seed {wildcards.seed} > {log} 2>&1"


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
        gpu=local_gpus(),
        gres=slurm_gres(),
    params:
        config=lambda wc: experiment(wc).params_hash(),
    shell:
        hrm_command("evaluate {wildcards.experiment} --seed {wildcards.seed} > {log} 2>&1")


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
        gpu=local_gpus(),
        gres=slurm_gres(),
    params:
        config=lambda wc: experiment(wc).params_hash(),
    shell:
        hrm_command("evaluate {wildcards.experiment} --seed {wildcards.seed} > {log} 2>&1")


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
        gpu=local_gpus(),
        gres=slurm_gres(),
    params:
        config=lambda wc: experiment(wc).params_hash(),
    shell:
        hrm_command("analyze {wildcards.analysis} {wildcards.experiment} --seed {wildcards.seed} > {log} 2>&1")
