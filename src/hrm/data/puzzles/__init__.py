"""Reasoning puzzles (REFERENCE II.4): generators, exact solvers, augmentations and ARC voting."""
