"""The `runtime` section applied: speed options (precision, attention, optimizer kernels, compile) and the
processes of a run (one per GPU, torchrun, SLURM nodes)."""
