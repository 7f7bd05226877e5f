# download -> build, one job per data set.


rule download:
    input:
        lambda wc: stages.download_deps(wc.dataset),
    output:
        directory(paths.RAW_DIR),
    log:
        paths.DATA_LOG.format(verb="download", dataset="{dataset}"),
    conda:
        "../envs/hrm.yaml"
    shell:
        "python -m hrm download {wildcards.dataset} > {log} 2>&1"


rule build:
    input:
        lambda wc: stages.build_deps(wc.dataset),
    output:
        directory(paths.BUILT_DIR),
    log:
        paths.DATA_LOG.format(verb="build", dataset="{dataset}"),
    conda:
        "../envs/hrm.yaml"
    shell:
        "python -m hrm build {wildcards.dataset} > {log} 2>&1"
