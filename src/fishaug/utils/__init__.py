"""Run folders, Hydra helpers and logging set-up."""
