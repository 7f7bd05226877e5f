"""The ground floor: files written atomically, typed errors, params fields, paths, progress, provenance,
run locks and checkpoints, the device's facts (NVML). Imports nothing of the pipeline above it."""
