"""Train, validate and test one configuration; the work behind ``python train.py``."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from hydra.utils import call, instantiate
from omegaconf import DictConfig, OmegaConf

from fishaug.augment import build_augmentation
from fishaug.data.datamodule import FishDataModule
from fishaug.data.manifest import track_ids
from fishaug.evaluation.metrics import classification_metrics, confusion_matrix
from fishaug.evaluation.outputs import write_confusion, write_predictions
from fishaug.models.module import FishClassifier
from fishaug.report.wandb_run import log_run_config, log_run_results
from fishaug.utils.callbacks import EpochSeed
from fishaug.utils.resume import config_key, find_previous, reuse_results, write_key

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit a model on the train split, pick the best checkpoint by val macro F1, and test it.

    Writes ``split.csv``, ``metrics.json``, ``predictions_{val,test}.csv``,
    ``confusion_{val,test}.csv|png`` and ``checkpoints/`` into ``cfg.paths.output_dir`` and
    returns the flat metrics.
    """
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    augment = build_augmentation(OmegaConf.to_container(cfg.aug, resolve=True), seed=cfg.seed)

    key = config_key(cfg)
    write_key(output_dir, key)
    previous = find_previous(Path(cfg.paths.log_dir), key, exclude=output_dir)
    if cfg.get("skip_completed") and previous.completed is not None:
        log.info(
            "The same configuration already finished in %s; its results are copied here. "
            "Set skip_completed=false to train again.",
            previous.completed,
        )
        return reuse_results(previous.completed, output_dir)
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is None and cfg.get("resume") and previous.last_checkpoint is not None:
        ckpt_path = str(previous.last_checkpoint)
        log.info("Resuming the interrupted run of this configuration from %s", ckpt_path)
        (previous.last_checkpoint.parents[1] / "resumed_in.txt").write_text(f"{output_dir}\n")

    L.seed_everything(cfg.seed, workers=True)

    # An augmentation that adds images (synthetic sets) exposes extra_train_rows(split).
    datamodule = build_datamodule(
        cfg, train_augment=augment, extra_train=getattr(augment, "extra_train_rows", None)
    )
    datamodule.setup("fit")
    datamodule.save_split(output_dir / "split.csv")

    model: FishClassifier = instantiate(
        cfg.model, class_names=datamodule.class_names, _convert_="object"
    )
    trainer = build_trainer(cfg)
    log_run_config(trainer, cfg)
    log_run_summary(cfg, datamodule, trainer)

    metrics: dict[str, Any] = {}
    if cfg.get("train"):
        started = time.perf_counter()
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics["time/fit_s"] = time.perf_counter() - started
        epochs = max(trainer.current_epoch, 1)
        metrics["time/epoch_s"] = metrics["time/fit_s"] / epochs
        log.info(
            "Fit took %.1f s (%.1f s per epoch)", metrics["time/fit_s"], metrics["time/epoch_s"]
        )

    best = best_checkpoint(trainer)
    metrics.update(evaluate_subset(trainer, model, datamodule, "val", best, output_dir))
    if cfg.get("test"):
        started = time.perf_counter()
        metrics.update(evaluate_subset(trainer, model, datamodule, "test", best, output_dir))
        metrics["time/test_s"] = time.perf_counter() - started

    metrics["best_checkpoint"] = best
    write_metrics(output_dir / "metrics.json", metrics)
    log_run_results(trainer, metrics, output_dir)
    log.info(
        "val/f1_macro %.4f, test/f1_macro %s",
        metrics["val/f1_macro"],
        f"{metrics['test/f1_macro']:.4f}" if "test/f1_macro" in metrics else "not run",
    )
    return metrics


def build_datamodule(cfg: DictConfig, **kwargs: Any) -> FishDataModule:
    """Load the dataset's manifest and build the DataModule that ``cfg.data`` describes."""
    manifest: pd.DataFrame = call(cfg.dataset)
    return instantiate(cfg.data, manifest=manifest, _convert_="object", **kwargs)


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """Instantiate the Trainer with the configured callbacks and loggers."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks.append(EpochSeed(cfg.seed))
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)


def best_checkpoint(trainer: L.Trainer) -> str | None:
    """Return the checkpoint with the best val macro F1, or None when none was saved."""
    callback = trainer.checkpoint_callback
    path = getattr(callback, "best_model_path", "") if callback is not None else ""
    if not path:
        log.warning("No checkpoint was saved; evaluating the weights as they are after fit.")
        return None
    return path


def evaluate_subset(
    trainer: L.Trainer,
    model: FishClassifier,
    datamodule: FishDataModule,
    subset: str,
    ckpt_path: str | None,
    output_dir: Path,
) -> dict[str, Any]:
    """Run val or test with a checkpoint, write predictions and confusion matrices, return metrics."""
    run = trainer.validate if subset == "val" else trainer.test
    run(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    probs, targets, rows = model.collected[subset]
    frame = datamodule.split.loc[rows.numpy()]
    tracks = track_ids(frame)
    if tracks is None:
        tracks = frame["video"]

    class_names = datamodule.class_names
    metrics = classification_metrics(probs, targets, class_names, subset, tracks.tolist())
    write_predictions(output_dir / f"predictions_{subset}.csv", frame, probs, class_names)
    matrix = confusion_matrix(probs, targets, len(class_names), normalize="pred")
    write_confusion(
        output_dir / f"confusion_{subset}",
        matrix,
        class_names,
        f"{subset}: confusion matrix, normalised over predictions",
    )
    return metrics


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    """Write metrics as flat JSON; NaN becomes null so the file stays valid JSON."""
    clean = {
        key: None if isinstance(value, float) and math.isnan(value) else value
        for key, value in metrics.items()
    }
    path.write_text(json.dumps(clean, indent=2, sort_keys=True))


def log_run_summary(cfg: DictConfig, datamodule: FishDataModule, trainer: L.Trainer) -> None:
    """Log what explains a run: model, augmentation, data sizes, batch size and steps."""
    train_size = len(datamodule.datasets["train"])
    batches = math.ceil(train_size / datamodule.batch_size)
    effective_batch = datamodule.batch_size * trainer.accumulate_grad_batches * trainer.world_size
    log.info(
        "Model %s (%s), augmentation %s, %d classes; train/val/test images %d/%d/%d; "
        "effective batch size %d, %d steps per epoch, at most %s epochs; torch threads %d",
        cfg.model.arch,
        "from scratch" if cfg.model.get("weights_path") is None else cfg.model.weights_path,
        OmegaConf.to_container(cfg.aug, resolve=True),
        datamodule.num_classes,
        train_size,
        len(datamodule.datasets["val"]),
        len(datamodule.datasets["test"]),
        effective_batch,
        batches,
        trainer.max_epochs,
        torch.get_num_threads(),
    )
