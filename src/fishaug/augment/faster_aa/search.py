"""Search a Faster AutoAugment policy on the training split; the work behind ``python search.py``."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from fishaug.augment.faster_aa.export import POLICY_FILE, PolicyExport
from fishaug.augment.faster_aa.module import CriticClassifier, FasterAutoAugmentSearch
from fishaug.augment.faster_aa.operations import OPERATIONS
from fishaug.augment.faster_aa.policy import Policy
from fishaug.augment.registry import check_range
from fishaug.data.datamodule import FishDataModule
from fishaug.errors import ConfigError
from fishaug.training import build_datamodule

log = logging.getLogger(__name__)


def search(cfg: DictConfig) -> dict[str, Any]:
    """Search a policy on the train split of ``cfg``'s data and write it into the run folder.

    Writes ``split.csv``, ``policy.json`` (the policy after the last epoch, an Albumentations
    pipeline), ``policies/epoch_<NNN>.json`` for each epoch of ``search.export_epochs`` that is
    reached, a ``*_summary.txt`` beside each policy, ``search_losses.csv|png`` and
    ``metrics.json`` into ``cfg.paths.output_dir``; returns the metrics. Validation and test
    images are never loaded.

    Raises:
        ConfigError: a search setting is out of range, or the training split has too few
            images for one batch of ``2 * search.num_chunks`` or more images.
    """
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    check_search_config(cfg)
    L.seed_everything(cfg.seed, workers=True)

    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    datamodule.save_split(output_dir / "split.csv")
    loader = search_loader(datamodule)

    settings = cfg.search
    policy = Policy(
        operations=list(settings.operations),
        num_sub_policies=settings.num_sub_policies,
        num_stages=settings.num_stages,
        num_chunks=settings.num_chunks,
        temperature=settings.temperature,
    )
    net = CriticClassifier(cfg.model.arch, datamodule.num_classes, cfg.model.get("weights_path"))
    module = FasterAutoAugmentSearch(
        policy,
        net,
        mean=datamodule.mean,
        std=datamodule.std,
        main_optimizer=instantiate(settings.main_optimizer),
        policy_optimizer=instantiate(settings.policy_optimizer),
        task_factor=settings.task_factor,
        gp_factor=settings.gp_factor,
    )
    export = PolicyExport(
        output_dir, settings.export_epochs, header=describe_search(cfg, datamodule)
    )
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=[export], logger=False, enable_checkpointing=False
    )
    log.info(
        "Faster AutoAugment search: %d training images of %d videos, %d px, batch %d (%d "
        "augmented in %d chunks, %d real), %d sub-policies of %d stages over %d operations, "
        "backbone %s, at most %s epochs; torch threads %d",
        len(loader.dataset),
        datamodule.subset_frame("train")["video"].nunique(),
        datamodule.image_size,
        loader.batch_size,
        loader.batch_size // 2,
        settings.num_chunks,
        loader.batch_size // 2,
        settings.num_sub_policies,
        settings.num_stages,
        len(settings.operations),
        cfg.model.arch,
        trainer.max_epochs,
        torch.get_num_threads(),
    )

    started = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader)
    elapsed = time.perf_counter() - started

    metrics = search_metrics(module, elapsed, len(loader.dataset))
    metrics["policy"] = str(output_dir / POLICY_FILE)
    metrics["policies"] = [str(path) for path in export.written]
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    log.info(
        "Search finished: %d epochs, %d images in %.1f s of search epochs (%.1f s with set-up): "
        "%.1f images/s. Policy: %s",
        metrics["search/epochs"],
        metrics["search/images"],
        metrics["time/epochs_s"],
        elapsed,
        float("nan") if metrics["search/images_per_s"] is None else metrics["search/images_per_s"],
        metrics["policy"],
    )
    return metrics


def check_search_config(cfg: DictConfig) -> None:
    """Check the ``search`` settings, the batch size and the precision before reading data.

    Raises:
        ConfigError: naming the key, its value and the valid range.
    """
    settings = cfg.search
    check_range("search.num_sub_policies", settings.num_sub_policies, 1, 10_000, integer=True)
    check_range("search.num_stages", settings.num_stages, 1, 100, integer=True)
    check_range("search.num_chunks", settings.num_chunks, 1, 10_000, integer=True)
    check_range("search.temperature", settings.temperature, 1e-6, 100.0)
    check_range("search.task_factor", settings.task_factor, 0.0, 1e6)
    check_range("search.gp_factor", settings.gp_factor, 0.0, 1e6)

    operations = list(settings.operations or [])
    unknown = sorted(set(operations) - set(OPERATIONS))
    if not operations or unknown:
        raise ConfigError(
            f"search.operations={operations} is not valid ({'unknown ' + str(unknown) if unknown else 'empty'}); "
            f"list one or more of {sorted(OPERATIONS)}."
        )
    if len(set(operations)) != len(operations):
        raise ConfigError(
            f"search.operations={operations} lists an operation twice; list each once."
        )
    for epoch in settings.export_epochs or []:
        check_range("search.export_epochs[]", epoch, 1, 1_000_000, integer=True)

    # Half of each batch is augmented and split into num_chunks chunks, one sub-policy each.
    batch_size = cfg.data.batch_size
    if batch_size < 2 * settings.num_chunks:
        raise ConfigError(
            f"data.batch_size={batch_size} is too small for search.num_chunks="
            f"{settings.num_chunks}: half of each batch is augmented in num_chunks chunks, so "
            f"use data.batch_size >= {2 * settings.num_chunks} or fewer chunks."
        )
    precision = str(cfg.trainer.get("precision", "32-true"))
    if precision.startswith("16"):
        raise ConfigError(
            f"trainer.precision={precision} is not supported by the search: the gradient "
            "penalty needs unscaled gradients. Use trainer.precision=32-true or bf16-mixed."
        )


def search_loader(datamodule: FishDataModule) -> DataLoader:
    """Return the training loader of ``datamodule`` with incomplete last batches dropped.

    It keeps the data module's sampler (balanced or shuffled), so the search draws the
    training images as training does, without augmentation.

    Raises:
        ConfigError: the training split has fewer images than one batch.
    """
    train_loader = datamodule.train_dataloader()
    num_images = len(train_loader.dataset)
    if num_images < datamodule.batch_size:
        raise ConfigError(
            f"The training split has {num_images} images, fewer than one batch "
            f"(data.batch_size={datamodule.batch_size}); the search needs at least one full "
            "batch. Lower data.batch_size (and search.num_chunks) or use more data."
        )
    return DataLoader(
        train_loader.dataset,
        batch_size=datamodule.batch_size,
        sampler=train_loader.sampler,
        num_workers=train_loader.num_workers,
        pin_memory=train_loader.pin_memory,
        worker_init_fn=train_loader.worker_init_fn,
        drop_last=True,
    )


def describe_search(cfg: DictConfig, datamodule: FishDataModule) -> str:
    """Return the lines that record where a policy came from, for its summary file."""
    train = datamodule.subset_frame("train")
    settings = OmegaConf.to_container(cfg.search, resolve=True)
    settings.pop("operations", None)
    fold = f"fold {datamodule.fold}" if datamodule.scheme == "video_folds" else "no folds"
    return (
        f"Data: {cfg.dataset.get('_target_', '')} {cfg.dataset.get('root', cfg.dataset.get('path', ''))}, "
        f"split {datamodule.scheme} ({fold}, split seed {datamodule.split_seed}); searched on "
        f"the {len(train)} training images of {train['video'].nunique()} videos at "
        f"{datamodule.image_size} px. Train with the same split, because the search has seen "
        "these videos.\n"
        f"Settings: backbone {cfg.model.arch}, seed {cfg.seed}, {settings}.\n"
        f"Operations: {', '.join(cfg.search.operations)}."
    )


def search_metrics(
    module: FasterAutoAugmentSearch, elapsed: float, num_images: int
) -> dict[str, Any]:
    """Collect throughput and the last epoch's losses as flat metrics."""
    seconds = module.search_seconds
    metrics: dict[str, Any] = {
        "search/epochs": len(module.history),
        "search/train_images": num_images,
        "search/images": module.images_seen,
        "search/images_per_s": module.images_seen / seconds if seconds > 0 else None,
        "time/epochs_s": seconds,
        "time/search_s": elapsed,
    }
    if module.history:
        last = module.history[-1]
        for key in ("task_loss", "critic_loss", "policy_loss", "wasserstein"):
            metrics[f"search/{key}"] = last[key]
    return metrics
