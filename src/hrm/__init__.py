"""hrm: a reproducible pipeline for the Hierarchical Reasoning Model studies."""

__version__ = "0.1.0"
