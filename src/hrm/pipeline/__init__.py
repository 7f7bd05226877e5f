"""The pipeline described: params (config), the two studies as one table, the stage table that DVC and
Snakemake read, and dvc.lock as it stands. No torch here."""
