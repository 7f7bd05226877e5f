"""Benchmarks: commands that print measurements (never timed tests). `hrm bench build | train | memory`,
and `hrm bench gpu-check`, the GPU acceptance check (`make gpu-check`)."""
