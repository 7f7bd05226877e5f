# report: the paper-vs-reproduced tables of one group (paper -> results/, demo -> results/demo/).


rule report:
    input:
        lambda wc: stages.report_deps(PARAMS, paths.group_of_root(wc.root)),
    output:
        [
            report(path, caption="../report/tables.rst", category="Tables", subcategory="{root}")
            for path in expand(paths.TABLE, table=paths.TABLES, ext=paths.TABLE_EXTS, allow_missing=True)
        ],
        report(paths.AUDIT, caption="../report/audit.rst", category="Tables", subcategory="{root}"),
        directory(paths.GROUP_FIGURES),
    log:
        paths.GROUP_LOG.format(verb="report", root="{root}"),
    conda:
        "../envs/hrm.yaml"
    params:
        group=lambda wc: paths.group_of_root(wc.root),
    shell:
        "python -m hrm report {params.group} > {log} 2>&1"
