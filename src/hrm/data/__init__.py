"""Data: sources (what to fetch), download (fetching it), formats (parsers), build (arrays)."""
