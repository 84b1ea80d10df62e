"""Loupe on Ray: archive-scale re-inspection (``loupe run --executor ray``), streamed sources, Parquet results."""
