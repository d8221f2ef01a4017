"""Filter a synthetic set by its likeness to the real training images of each class.

Each synthetic image is scored in the feature space of a fishaug classifier trained on the real
training split (the penultimate layer of its ResNet, L2-normalised):

- ``centroid``: cosine similarity to the mean feature of the class's real training images;
- ``knn``: mean cosine similarity to the ``k`` most similar real training images of the class;
- ``prob``: the classifier's probability for the image's class.

Per class, the best ``keep_fraction`` of the images is kept, or every image scoring at least
``threshold``. The real images come from the ``split.csv`` of the classifier's run, so the
filter compares against the training split the classifier was trained on.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from fishaug.data.datamodule import IMAGENET_MEAN, IMAGENET_STD
from fishaug.data.transforms import build_transform, channel_stats, load_rgb
from fishaug.errors import ConfigError, DataError
from fishaug.models.module import FishClassifier
from fishaug.synth.provenance import write_provenance
from fishaug.synth.runtime import fresh_output_dir, resolve_device
from fishaug.synth.sets import SET_MANIFEST, read_set, write_set_manifest

log = logging.getLogger(__name__)

SCORES = ("centroid", "knn", "prob")


class FeatureExtractor:
    """Penultimate-layer features and class probabilities of a fishaug classifier.

    Args:
        model: the classifier; its ResNet head is kept apart so one forward pass gives both.
        transform: PIL image to normalised tensor (3, S, S), as in evaluation.
    """

    def __init__(
        self, model: FishClassifier, transform: Any, device: torch.device, batch_size: int
    ):
        self.head = model.net.fc
        self.body = model.net
        self.body.fc = nn.Identity()
        self.body.eval().to(device)
        self.head.eval().to(device)
        self.transform = transform
        self.device = device
        self.batch_size = batch_size

    @torch.inference_mode()
    def __call__(self, paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return L2-normalised features (N, D) and probabilities (N, C), both float32."""
        features, probs = [], []
        for start in range(0, len(paths), self.batch_size):
            batch = torch.stack(
                [self.transform(load_rgb(p)) for p in paths[start : start + self.batch_size]]
            )
            feature = self.body(batch.to(self.device))
            probs.append(self.head(feature).softmax(dim=1).float().cpu())
            features.append(nn.functional.normalize(feature.float(), dim=1).cpu())
        return torch.cat(features).numpy(), torch.cat(probs).numpy()


def real_training_rows(checkpoint: Path, split_file: str | None) -> tuple[pd.DataFrame, Path]:
    """Return the real images of the train subset of the classifier's split, and the split file.

    Raises:
        ConfigError: no split file is given and none lies in the checkpoint's run folder.
        DataError: the split has no real training images.
    """
    path = Path(split_file).expanduser() if split_file else checkpoint.parent.parent / "split.csv"
    if not path.is_file():
        raise ConfigError(
            f"No split file at '{path}'. Set filter.split_file to the split.csv of the run that "
            "trained filter.checkpoint."
        )
    split = pd.read_csv(path, dtype={"label": str, "video": str, "source": str})
    train = split[split["subset"] == "train"]
    if "source" in train.columns:
        train = train[train["source"].isna() | (train["source"] == "real")]
    if train.empty:
        raise DataError(f"'{path}' has no real training images.")
    return train.reset_index(drop=True), path


def run_settings(checkpoint: Path, image_size: int | None) -> dict[str, Any]:
    """Read image size, crop size and normalisation from the classifier's run config.

    ``image_size`` overrides the run's. Without a run config the defaults are 224 pixels, no
    crop and training-set normalisation, the project's training defaults.
    """
    settings: dict[str, Any] = {"image_size": 224, "crop_size": None, "normalization": "train"}
    config_file = checkpoint.parent.parent / ".hydra" / "config.yaml"
    if config_file.is_file():
        data = OmegaConf.load(config_file).get("data", {})
        for key in settings:
            if key in data and not OmegaConf.is_missing(data, key):
                settings[key] = data[key]
    else:
        log.warning("No run config at %s; using %s.", config_file, settings)
    if image_size is not None:
        settings["image_size"] = image_size
    return settings


def score_images(
    synthetic: pd.DataFrame,
    real: pd.DataFrame,
    extract: FeatureExtractor,
    class_names: list[str],
    method: str,
    k: int,
) -> np.ndarray:
    """Score each synthetic row against the real rows of its class; higher is more alike.

    Raises:
        DataError: a synthetic label has no real training images or is not a classifier class.
    """
    labels = sorted(set(synthetic["label"]))
    missing = sorted(set(labels) - set(real["label"]))
    if missing:
        raise DataError(f"Classes {missing} of the synthetic set have no real training images.")
    unknown = sorted(set(labels) - set(class_names))
    if unknown:
        raise DataError(f"Classes {unknown} are not classes of the classifier ({class_names}).")

    features, probs = extract(synthetic["path"].tolist())
    if method != "prob":
        real = real[real["label"].isin(labels)]
        real_features, _ = extract(real["path"].tolist())
    scores = np.empty(len(synthetic), dtype=np.float64)
    for label in labels:
        rows = (synthetic["label"] == label).to_numpy()
        if method == "prob":
            scores[rows] = probs[rows, class_names.index(label)]
            continue
        reference = real_features[(real["label"] == label).to_numpy()]
        if method == "centroid":
            centroid = reference.mean(axis=0)
            centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
            scores[rows] = features[rows] @ centroid
        else:
            similarity = features[rows] @ reference.T  # (n_synthetic, n_real)
            nearest = min(k, similarity.shape[1])
            scores[rows] = np.sort(similarity, axis=1)[:, -nearest:].mean(axis=1)
    return scores


def keep_mask(
    labels: pd.Series, scores: np.ndarray, keep_fraction: float | None, threshold: float | None
) -> np.ndarray:
    """Per class, keep scores >= ``threshold``, or else the top ``keep_fraction`` (at least one)."""
    keep = np.zeros(len(scores), dtype=bool)
    if threshold is not None:
        return scores >= threshold
    for label in labels.unique():
        rows = np.flatnonzero((labels == label).to_numpy())
        count = max(1, math.ceil(keep_fraction * len(rows)))
        best = rows[np.argsort(-scores[rows], kind="stable")[:count]]
        keep[best] = True
    return keep


def filter_set(
    input_dir: str | Path,
    output_dir: str | Path,
    checkpoint: str | Path,
    split_file: str | None = None,
    method: str = "centroid",
    k: int = 5,
    keep_fraction: float | None = 0.5,
    threshold: float | None = None,
    set_id: str = "filtered",
    image_size: int | None = None,
    batch_size: int = 64,
    device: str = "auto",
    cache_dir: str | None = None,
) -> pd.DataFrame:
    """Score a synthetic set, keep the best images and write them as a new set.

    Writes ``manifest.csv``, the kept rows with a ``score`` column and paths into the input set.
    ``scores.csv`` lists every row with ``score`` and ``kept``. The videos of ``provenance.json``
    are those of the input set plus the classifier's training videos.

    Raises:
        ConfigError: an option is invalid or the checkpoint or split file is missing.
        DataError: the input set or the split is unusable.
    """
    method, keep_fraction = _check_options(method, k, keep_fraction, threshold, batch_size)
    checkpoint = Path(checkpoint).expanduser()
    if not checkpoint.is_file():
        raise ConfigError(
            f"filter.checkpoint='{checkpoint}' does not exist. Train a classifier on the real "
            "data first (python train.py ...) and pass its checkpoints/<name>.ckpt."
        )
    synthetic, _ = read_set(input_dir)
    real, split_path = real_training_rows(checkpoint, split_file)
    settings = run_settings(checkpoint, image_size)
    torch_device = resolve_device(device, "filter.device")

    model = FishClassifier.load_from_checkpoint(checkpoint, map_location="cpu")
    mean, std = _normalization(settings["normalization"], real, settings["image_size"], cache_dir)
    transform = build_transform(settings["image_size"], mean, std, crop_size=settings["crop_size"])
    extract = FeatureExtractor(model, transform, torch_device, batch_size)
    scores = score_images(synthetic, real, extract, list(model.class_names), method, k)
    kept = keep_mask(synthetic["label"], scores, keep_fraction, threshold)

    output = fresh_output_dir(output_dir, True, "filter.output_dir", (SET_MANIFEST,))
    scored = synthetic.assign(score=scores, kept=kept)
    scored.to_csv(output / "scores.csv", index=False)
    rows = scored[kept].drop(columns="kept").assign(video=set_id, source=set_id)
    if rows.empty:
        raise DataError(
            f"filter.threshold={threshold} keeps no image (scores range {scores.min():.3f} to "
            f"{scores.max():.3f}); lower it or use filter.keep_fraction."
        )
    write_set_manifest(output, rows)
    write_provenance(
        output,
        "filtered",
        videos=real["video"].unique(),
        inputs=[input_dir],
        details={
            "set_id": set_id,
            "checkpoint": str(checkpoint),
            "split_file": str(split_path),
            "score": method,
            "k": k,
            "keep_fraction": keep_fraction,
            "threshold": threshold,
            **settings,
        },
    )
    summary = scored.groupby("label").agg(
        images=("kept", "size"), kept=("kept", "sum"), mean_score=("score", "mean")
    )
    log.info("Filtered set '%s' in %s (score %s):\n%s", set_id, output, method, summary.to_string())
    return rows


def run_filter(cfg: DictConfig) -> pd.DataFrame:
    """Score and filter the set that ``cfg.filter`` names (the ``filter`` step)."""
    settings = OmegaConf.to_container(cfg.filter, resolve=True)
    if settings["checkpoint"] is None:
        raise ConfigError(
            "filter.checkpoint is not set; pass the checkpoint of a classifier trained on the "
            "real training split, e.g. filter.checkpoint=logs/train/runs/<run>/checkpoints/last.ckpt."
        )
    return filter_set(**settings)


def _normalization(kind: str, real: pd.DataFrame, image_size: int, cache_dir: str | None):
    if kind == "train":
        return channel_stats(real["path"].tolist(), image_size, cache_dir)
    if kind == "imagenet":
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    return [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]


def _check_options(method, k, keep_fraction, threshold, batch_size) -> tuple[str, float | None]:
    if method not in SCORES:
        raise ConfigError(f"filter.method={method!r} is not valid; use one of {list(SCORES)}.")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"filter.k={k!r} is out of range; use a whole number >= 1.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"filter.batch_size={batch_size!r} is out of range; use >= 1.")
    if threshold is not None:
        return method, None
    if keep_fraction is None or not 0 < keep_fraction <= 1:
        raise ConfigError(
            f"filter.keep_fraction={keep_fraction!r} is out of range; use 0 < f <= 1, or set "
            "filter.threshold instead."
        )
    return method, keep_fraction
