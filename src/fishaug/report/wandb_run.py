"""Weights & Biases runs that a dashboard can compare.

Each training job becomes one W&B run. It is named by the augmentation and the swept
overrides (``randaugment n=2 m=9 fold=1``), grouped by experiment or sweep, and tagged with
augmentation, model, split scheme and fold. Its config is the whole run config, flattened, and
its summary has the test metrics, run time, confusion matrix and a per-class table.

Lightning's ``WandbLogger`` reuses a W&B run that is still open, so every job must finish its
run: :func:`log_run_results` does so after a job that succeeded, and
:class:`fishaug.report.hydra_callbacks.WandbFinishCallback` after a job that failed.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, ListConfig, OmegaConf

log = logging.getLogger(__name__)

# Written into the sweep folder when a multirun starts: the swept keys and the number of jobs.
SWEEP_FILE = "sweep.json"
# Override keys that set up a run rather than define what is compared; left out of run names
# outside a multirun. The aug group choice is not among them because it starts every name.
SETUP_KEYS = (
    "dataset",
    "paths",
    "trainer",
    "logger",
    "callbacks",
    "hydra",
    "preset",
    "debug",
    "experiment",
    "tags",
    "task_name",
    "data.num_workers",
    "data.cache_dir",
)
PER_CLASS_METRICS = ("support", "precision", "recall", "specificity", "f1")


def wandb_logger(
    save_dir: str,
    project: str = "fishaug",
    name: str | None = None,
    group: str | None = None,
    tags: Sequence[str] = (),
    tag_values: Mapping[str, Any] | None = None,
    aug_name: str = "none",
    offline: bool = False,
    log_model: bool | str = False,
    **kwargs: Any,
) -> WandbLogger:
    """Build a ``WandbLogger`` whose run is named, grouped and tagged for comparison.

    Args:
        save_dir: folder for W&B files; the run folder keeps ``wandb/<offline-run-...>/``.
        name: the run name; None derives it from ``aug_name`` and the job's overrides (in a
            multirun, only the swept ones), for example ``randaugment n=2 m=9 fold=1``.
        group: the run group; None uses the experiment name, else the sweep folder's name in
            a multirun, else no group.
        tags: free tags, added to ``key:value`` tags built from ``tag_values``.
        tag_values: for example ``{"aug": "randaugment", "model": "resnet18", "fold": 1}``.
        offline: write the run locally only (as ``WANDB_MODE=offline`` does); upload it later
            with ``wandb sync``.
        kwargs: passed to ``WandbLogger`` and on to ``wandb.init`` (``entity``, ``job_type``).
    """
    hydra_cfg = _hydra_config()
    overrides: list[str] = []
    swept: list[str] | None = None
    choices: dict[str, Any] = {}
    sweep_dir: Path | None = None
    if hydra_cfg is not None:
        overrides = list(hydra_cfg.overrides.task)
        choices = dict(hydra_cfg.runtime.choices)
        if str(hydra_cfg.mode).endswith("MULTIRUN"):
            sweep_dir = Path(hydra_cfg.sweep.dir)
            swept = read_swept_keys(sweep_dir)

    if name is None:
        name = run_name(aug_name, overrides, swept)
    if group is None:
        group = run_group(choices.get("experiment"), sweep_dir)
    all_tags = list(tags or []) + [f"{k}:{v}" for k, v in (tag_values or {}).items()]
    # W&B rejects tags longer than 64 characters.
    all_tags = [tag[:64] for tag in dict.fromkeys(all_tags)]
    log.info("W&B run %r in group %r with tags %s", name, group, all_tags)
    return WandbLogger(
        save_dir=save_dir,
        project=project,
        name=name,
        group=group,
        tags=all_tags,
        offline=offline,
        log_model=log_model,
        **kwargs,
    )


def run_name(aug_name: str, overrides: Sequence[str], swept_keys: Sequence[str] | None) -> str:
    """Name a run by its augmentation and overrides: ``randaugment n=2 m=9 fold=1``.

    With ``swept_keys`` (a multirun) only those overrides count; otherwise every override
    except the set-up keys in ``SETUP_KEYS``. A key loses its first component (``aug.n`` reads
    ``n``, ``data.fold`` reads ``fold``).
    """
    parts = [aug_name]
    for override in overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        if key == "aug":
            continue
        wanted = key in swept_keys if swept_keys is not None else not _is_setup_key(key)
        if wanted:
            short = key.split(".", 1)[1] if "." in key else key
            parts.append(f"{short}={value}")
    return " ".join(parts)


def run_group(experiment: str | None, sweep_dir: Path | None) -> str | None:
    """Group by the experiment config's name, else by the sweep folder, else not at all."""
    if experiment not in (None, "null", "None"):
        return str(experiment)
    if sweep_dir is not None:
        return f"sweep {sweep_dir.name}"
    return None


def read_sweep_file(sweep_dir: Path) -> dict[str, Any]:
    """Return the record of :func:`write_sweep_file`, or {} when the sweep has none."""
    path = sweep_dir / SWEEP_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def read_swept_keys(sweep_dir: Path) -> list[str] | None:
    """Return the keys that vary between the jobs of a sweep, or None when unknown."""
    record = read_sweep_file(sweep_dir)
    return list(record["swept_keys"]) if "swept_keys" in record else None


def write_sweep_file(
    sweep_dir: Path, swept_keys: Sequence[str], overrides: Sequence[str], jobs: int | None
) -> None:
    """Record the swept keys and the number of jobs of a multirun (None when not known in
    advance), so that each job can name its W&B run and the last job can build the report."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    record = {"swept_keys": list(swept_keys), "overrides": list(overrides), "jobs": jobs}
    (sweep_dir / SWEEP_FILE).write_text(json.dumps(record, indent=2))


def _is_setup_key(key: str) -> bool:
    return any(key == k or key.startswith(f"{k}.") for k in SETUP_KEYS)


def _hydra_config() -> DictConfig | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def wandb_loggers(trainer: L.Trainer) -> list[WandbLogger]:
    return [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]


def log_run_config(trainer: L.Trainer, cfg: DictConfig) -> None:
    """Put the whole resolved config, flattened to dotted keys, into each W&B run's config.

    Does nothing without a ``WandbLogger``. Starts the W&B run if it has not started yet.
    """
    loggers = wandb_loggers(trainer)
    if not loggers:
        return
    container = {str(key): _resolved(cfg[key]) for key in cfg if key != "hydra"}
    flat = flatten_mapping(container)
    for logger in loggers:
        logger.log_hyperparams(flat)


def _resolved(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def flatten_mapping(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to dotted keys; lists stay whole values."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten_mapping(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def log_run_results(trainer: L.Trainer, metrics: Mapping[str, Any], output_dir: Path) -> None:
    """Write metrics, run time, confusion matrix and per-class table to W&B, then finish.

    The summary gets every ``val/``, ``test/`` and ``time/`` value of ``metrics``. The val and
    test confusion matrices come from ``predictions_{val,test}.csv`` in ``output_dir`` and
    their pictures from ``confusion_{val,test}.png``. Does nothing without a ``WandbLogger``.
    """
    loggers = wandb_loggers(trainer)
    if not loggers:
        return
    import wandb

    summary = {
        key: value
        for key, value in metrics.items()
        if key.split("/", 1)[0] in ("val", "test", "time") and value is not None
    }
    summary["status"] = "completed"
    for logger in loggers:
        run = logger.experiment
        run.summary.update(summary)
        for subset in ("val", "test"):
            payload = _subset_payload(wandb, metrics, output_dir, subset)
            if payload:
                run.log(payload)
        run.finish()
    log.info("Finished the W&B run with %d summary values.", len(summary))


def _subset_payload(
    wandb: Any, metrics: Mapping[str, Any], output_dir: Path, subset: str
) -> dict[str, Any]:
    """Build the confusion matrix, its picture and the per-class table of one subset."""
    payload: dict[str, Any] = {}
    predictions_path = output_dir / f"predictions_{subset}.csv"
    if predictions_path.is_file():
        predictions = pd.read_csv(predictions_path)
        classes = [c[len("prob_") :] for c in predictions.columns if c.startswith("prob_")]
        index = {label: i for i, label in enumerate(classes)}
        payload[f"{subset}/confusion_matrix"] = wandb.plot.confusion_matrix(
            y_true=[index[label] for label in predictions["label"]],
            preds=[index[label] for label in predictions["pred"]],
            class_names=classes,
            title=f"{subset} confusion matrix",
        )
        rows = [
            [label] + [metrics.get(f"{subset}/{name}/{label}") for name in PER_CLASS_METRICS]
            for label in classes
        ]
        payload[f"{subset}/per_class"] = wandb.Table(
            columns=["class", *PER_CLASS_METRICS], data=rows
        )
    picture = output_dir / f"confusion_{subset}.png"
    if picture.is_file():
        payload[f"{subset}/confusion_image"] = wandb.Image(str(picture))
    return payload


def finish_open_run(failed: bool) -> None:
    """Finish the W&B run left open by a job, marking it failed when the job raised."""
    wandb = sys.modules.get("wandb")
    if wandb is None or wandb.run is None:
        return
    run = wandb.run
    run.summary["status"] = "failed" if failed else "completed"
    log.info("Finishing W&B run %r (%s).", run.name, "failed" if failed else "completed")
    run.finish(exit_code=1 if failed else 0)
