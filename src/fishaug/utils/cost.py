"""Seconds per training epoch, measured in earlier runs or taken from a recorded default.

Every training run writes ``time/epoch_s`` (fit time divided by the epochs it trained) into its
``metrics.json``. :func:`measured_epoch_times` gathers these figures from the run folders under a
log folder, and :class:`EpochTimes` picks the best match for a planned job.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
EPOCH_KEY = "time/epoch_s"
# A run folder with this file copied its metrics from an earlier run (skip_completed), so its
# time is that run's and counts once.
REUSED_FILE = "reused_from.txt"

# Seconds per epoch (train and val) on FishCam-AT, video fold 0 (518 training images, batch
# 32), on 2 CPU cores without a GPU. ResNet18 at 64 px is measured: 6.1 and 6.3 s per epoch in
# two runs of `python train.py dataset=fishcam preset=cpu trainer.max_epochs=2`. The others are
# estimates, scaled from it by the FLOPs of a training step per image as counted by
# torch.utils.flop_counter (ResNet18 0.87 and 10.6 GFLOP, ResNet50 1.98 and 24.3 GFLOP at 64 and
# 224 px). A GPU is much faster: run one epoch of each model on the machine that will run the
# study and plan again, and the measured time replaces these.
DEFAULT_EPOCH_S: dict[tuple[str, int], float] = {
    ("resnet18", 64): 6.2,
    ("resnet50", 64): 14.1,
    ("resnet18", 224): 76.0,
    ("resnet50", 224): 173.0,
}
# A model without a default counts as the larger of the study's two.
FALLBACK_ARCH = "resnet50"
DEFAULT_SOURCE = "default for 2 CPU cores"


@dataclass(frozen=True)
class RunShape:
    """What the time of one epoch depends on, as read from a run's config."""

    dataset: str
    arch: str
    image_size: int
    batch_size: int
    accelerator: str
    precision: str


def run_shape(cfg: DictConfig) -> RunShape:
    """Read the keys of a training config that decide the time per epoch.

    ``cfg`` is a train.yaml config, composed or loaded from a run's ``.hydra/config.yaml``. The
    data set is identified by the text of its settings before interpolation, which is the same
    in both, and a value that does not resolve outside a Hydra job counts as missing.
    """

    def value(key: str, default: Any) -> Any:
        found = OmegaConf.select(cfg, key, default=default, throw_on_resolution_failure=False)
        return default if found is None else found

    dataset = OmegaConf.to_container(cfg.get("dataset") or {}, resolve=False)
    location = dataset.get("root") or dataset.get("path") or ""
    return RunShape(
        dataset=f"{dataset.get('_target_', '')}:{location}",
        arch=str(value("model.arch", "")),
        image_size=int(value("data.image_size", 0)),
        batch_size=int(value("data.batch_size", 0)),
        accelerator=str(value("trainer.accelerator", "")),
        precision=str(value("trainer.precision", "")),
    )


def is_full_epoch(cfg: DictConfig) -> bool:
    """False for runs that trained on a part of each epoch (limit_train_batches, fast_dev_run)."""
    limit = OmegaConf.select(cfg, "trainer.limit_train_batches", default=None)
    fast_dev_run = OmegaConf.select(cfg, "trainer.fast_dev_run", default=False)
    full = limit is None or (isinstance(limit, float) and limit == 1.0)
    return full and fast_dev_run in (False, 0, None)


def measured_epoch_times(log_dir: str | Path) -> pd.DataFrame:
    """Collect ``time/epoch_s`` of the finished full-epoch runs below ``log_dir``.

    Returns one row per run: the :class:`RunShape` fields, ``epoch_s`` and ``run`` (the folder).
    Runs that reused another run's results, trained on part of each epoch, or have no saved
    config are left out.
    """
    rows = []
    root = Path(log_dir)
    metric_files = root.rglob(METRICS_FILE) if root.is_dir() else []
    for metrics_path in metric_files:
        folder = metrics_path.parent
        config_path = folder / ".hydra" / "config.yaml"
        if (folder / REUSED_FILE).is_file() or not config_path.is_file():
            continue
        try:
            seconds = json.loads(metrics_path.read_text()).get(EPOCH_KEY)
            cfg = OmegaConf.load(config_path)
        except (json.JSONDecodeError, OSError, ValueError) as error:
            log.debug("Skipping %s: %s", folder, error)
            continue
        if not isinstance(seconds, int | float) or seconds <= 0 or not is_full_epoch(cfg):
            continue
        rows.append({**run_shape(cfg).__dict__, "epoch_s": float(seconds), "run": str(folder)})
    columns = [*RunShape.__dataclass_fields__, "epoch_s", "run"]
    return pd.DataFrame(rows, columns=columns)


class EpochTimes:
    """Estimate seconds per epoch for a job from measured runs, else from ``DEFAULT_EPOCH_S``.

    The match, best first: runs of the same data set, model, image size, batch size, accelerator
    and precision (their median); runs that differ only in image size, scaled by the ratio of
    pixel counts; the recorded default for the model, scaled the same way.
    """

    def __init__(self, measured: pd.DataFrame):
        self.measured = measured

    def estimate(self, shape: RunShape) -> tuple[float, str]:
        """Return the estimated seconds per epoch and where the figure comes from."""
        same = self.measured
        for field in ("dataset", "arch", "batch_size", "accelerator", "precision"):
            same = same[same[field] == getattr(shape, field)]
        exact = same[same["image_size"] == shape.image_size]
        if len(exact):
            return float(median(exact["epoch_s"])), f"measured ({len(exact)} runs)"
        if len(same):
            # NOTE: scaling by pixel count assumes the convolutions dominate; data loading and
            # the letterbox do not scale that way, so this is a rough estimate.
            nearest = same.iloc[(same["image_size"] - shape.image_size).abs().argsort()[:1]]
            size = int(nearest["image_size"].iloc[0])
            seconds = float(median(same.loc[same["image_size"] == size, "epoch_s"]))
            return seconds * (shape.image_size / size) ** 2, f"measured at {size} px, scaled"
        arch = shape.arch if any(a == shape.arch for a, _ in DEFAULT_EPOCH_S) else FALLBACK_ARCH
        size = min(
            (s for a, s in DEFAULT_EPOCH_S if a == arch), key=lambda s: abs(s - shape.image_size)
        )
        seconds = DEFAULT_EPOCH_S[(arch, size)] * (shape.image_size / size) ** 2
        scaled = (
            ""
            if (arch, size) == (shape.arch, shape.image_size)
            else f", {arch} at {size} px, scaled"
        )
        return seconds, f"{DEFAULT_SOURCE}{scaled}"
