"""Training: one run harness (run.py) and one trainer per study (image.py, puzzle.py)."""
