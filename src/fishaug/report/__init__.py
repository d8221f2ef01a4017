"""Comparing runs: collecting run folders, tables, statistics, plots, label issues, HTML, W&B."""
