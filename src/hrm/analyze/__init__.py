"""`hrm analyze KIND EXPERIMENT --seed S`: the papers' analyses of a trained run (REFERENCE II.5).

Each kind is a module here offering `analyze(params, name, seed) -> Path` (its JSON); the kinds, their
modules and what each measures are the analysis table in hrm.pipeline.studies (ANALYSES), which the
stage table reads: one stage per (kind, run) whose code dependencies are that kind's module alone.
"""
