"""Evaluation: one module per study, the ARC voting, the shared test-set passes and the figures."""
