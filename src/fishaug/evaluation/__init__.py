"""Metrics, per-track aggregation, confusion matrices and prediction files."""
