"""Reasoning-puzzle data (REFERENCE II.4): sources, generators with exact solvers, augmentations, the
authors' layout, and the training stream."""
