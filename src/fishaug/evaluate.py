"""Evaluate a saved checkpoint on one subset; the work behind ``python eval.py``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from fishaug.errors import ConfigError
from fishaug.models.module import FishClassifier
from fishaug.training import build_datamodule, build_trainer, evaluate_subset, write_metrics

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Load ``cfg.ckpt_path`` and evaluate it on ``cfg.subset`` (``val`` or ``test``).

    With ``cfg.split_file`` (a run's ``split.csv``) the run's split is reused exactly; otherwise
    the split is recomputed from the ``data`` config, which gives the same split for the same
    manifest and ``data.split_seed``. Writes ``metrics.json``, predictions and confusion matrices
    into ``cfg.paths.output_dir``.

    Raises:
        ConfigError: the checkpoint or split file does not exist, or ``subset`` is not val/test.
    """
    if cfg.subset not in ("val", "test"):
        raise ConfigError(f"subset={cfg.subset!r} is not valid; use 'val' or 'test'.")
    ckpt_path = Path(cfg.ckpt_path).expanduser()
    if not ckpt_path.is_file():
        raise ConfigError(f"ckpt_path='{cfg.ckpt_path}' does not exist. Pass a .ckpt file.")

    split = None
    if cfg.get("split_file"):
        split_path = Path(cfg.split_file).expanduser()
        if not split_path.is_file():
            raise ConfigError(f"split_file='{cfg.split_file}' does not exist.")
        split = pd.read_csv(split_path, dtype={"label": str, "video": str, "track": str})

    datamodule = build_datamodule(cfg, split=split)
    model = FishClassifier.load_from_checkpoint(ckpt_path, map_location="cpu")
    datamodule.class_names = list(model.class_names)
    datamodule.setup("test")

    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    trainer = build_trainer(cfg)
    metrics = evaluate_subset(trainer, model, datamodule, cfg.subset, str(ckpt_path), output_dir)
    metrics["checkpoint"] = str(ckpt_path)
    write_metrics(output_dir / "metrics.json", metrics)
    log.info("%s/f1_macro %.4f on %s", cfg.subset, metrics[f"{cfg.subset}/f1_macro"], ckpt_path)
    return metrics
