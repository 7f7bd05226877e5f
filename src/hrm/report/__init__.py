"""`hrm report GROUP`: the tables (tables.py), the analyses tables and figures (ablations.py), the paper's
numbers (paper.py) and the audit page that sets every one beside ours (audit.py, `publish`)."""
