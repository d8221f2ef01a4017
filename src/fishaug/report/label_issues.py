"""Likely label errors, found by cleanlab in out-of-sample predicted probabilities.

Confident learning (Northcutt, Jiang and Chuang, "Confident Learning: Estimating Uncertainty in
Dataset Labels", JAIR 2021) flags images whose given label disagrees with what models that
never trained on them predict. The probabilities must be out of sample: the validation
predictions of video folds (each image is predicted by the fold model that held its video
out) or the test predictions. An image predicted by several runs gets the mean probability.
"""

from __future__ import annotations

import base64
import io
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from fishaug.report.runs import Run

log = logging.getLogger(__name__)


@dataclass
class LabelIssues:
    """Images ranked from most to least likely mislabelled, and notes on the analysis.

    ``table`` columns: ``rank``, ``path``, ``video``, ``label``, ``suggested`` (the class with
    the highest mean probability), ``label_quality`` (mean probability of the given label,
    lower is more suspicious), ``suggested_prob`` and ``runs`` (how many runs predicted it).
    """

    table: pd.DataFrame
    messages: list[str] = field(default_factory=list)
    images: int = 0
    subset: str = "val"


def pool_predictions(runs: Sequence[Run], subset: str) -> tuple[pd.DataFrame, list[str]]:
    """Average the ``subset`` predicted probabilities per image over completed runs.

    Returns one row per image (``path``, ``label``, ``video``, ``runs``, ``prob_<class>``...)
    and the class list.
    """
    frames = []
    classes: list[str] = []
    for run in runs:
        predictions = run.predictions(subset) if run.completed else None
        if predictions is None:
            continue
        run_classes = [c[len("prob_") :] for c in predictions.columns if c.startswith("prob_")]
        classes = classes or run_classes
        frames.append(predictions[["path", "label", "video", *[f"prob_{c}" for c in classes]]])
    if not frames:
        return pd.DataFrame(), classes
    pooled = pd.concat(frames, ignore_index=True)
    probability_columns = [f"prob_{c}" for c in classes]
    grouped = pooled.groupby("path", sort=False)
    result = grouped[probability_columns].mean()
    result.insert(0, "runs", grouped.size())
    result.insert(0, "video", grouped["video"].first())
    result.insert(0, "label", grouped["label"].first())
    return result.reset_index(), classes


def find_label_issues(
    runs: Sequence[Run],
    subset: str = "val",
    min_per_class: int = 5,
    max_rows: int = 50,
    thumbnails: int = 24,
    thumbnail_size: int = 96,
) -> LabelIssues:
    """Rank the likely label errors in the pooled out-of-sample predictions of ``runs``.

    Confident learning estimates a threshold per class from that class's images, so a class
    with fewer than ``min_per_class`` images is left out with a message that names it. Its rows
    and its probability column are dropped, and the other probabilities are renormalised.

    Args:
        max_rows: rows kept in the ranked table.
        thumbnails: rows, from the top, that get a ``thumbnail`` column (a PNG data URI of
            at most ``thumbnail_size`` pixels a side); None where the image cannot be read.
    """
    from cleanlab.filter import find_label_issues as cleanlab_find_label_issues

    pooled, classes = pool_predictions(runs, subset)
    result = LabelIssues(table=pd.DataFrame(), subset=subset)
    if pooled.empty:
        result.messages.append(
            f"No label-error analysis: no completed run wrote predictions_{subset}.csv."
        )
        return result
    if subset == "val" and any(run.config.get("data.scheme") == "random_split" for run in runs):
        result.messages.append(
            "Some runs use random_split, whose validation images share videos with training "
            "images; their validation probabilities are over-confident, so fewer label errors "
            "are found than with video_folds."
        )

    counts = pooled["label"].value_counts()
    too_few = [c for c in classes if counts.get(c, 0) < min_per_class]
    for label in too_few:
        result.messages.append(
            f"Class {label!r} has {counts.get(label, 0)} images in the pooled {subset} "
            f"predictions, fewer than min_per_class={min_per_class}; it is left out of the "
            "label-error analysis. Pool more folds or use subset=test to include it."
        )
    kept = [c for c in classes if c not in too_few]
    if len(kept) < 2:
        result.messages.append(
            f"No label-error analysis: {len(kept)} class(es) have at least {min_per_class} "
            f"images in the {subset} predictions, and at least 2 are needed."
        )
        return result

    pooled = pooled[pooled["label"].isin(kept)].reset_index(drop=True)
    probs = pooled[[f"prob_{c}" for c in kept]].to_numpy(dtype=float)
    probs = probs / probs.sum(axis=1, keepdims=True)
    labels = pooled["label"].map({c: i for i, c in enumerate(kept)}).to_numpy()
    with warnings.catch_warnings():
        # Classes are already checked against min_per_class above.
        warnings.filterwarnings("ignore", message=".*too few examples.*")
        ranked = cleanlab_find_label_issues(
            labels, probs, return_indices_ranked_by="self_confidence"
        )
    result.images = len(pooled)

    suggested = probs.argmax(axis=1)
    table = pd.DataFrame(
        {
            "rank": np.arange(1, len(ranked) + 1),
            "path": pooled["path"].to_numpy()[ranked],
            "video": pooled["video"].to_numpy()[ranked],
            "label": pooled["label"].to_numpy()[ranked],
            "suggested": [kept[i] for i in suggested[ranked]],
            "label_quality": probs[ranked, labels[ranked]],
            "suggested_prob": probs[ranked, suggested[ranked]],
            "runs": pooled["runs"].to_numpy()[ranked],
        }
    )
    result.table = table.head(max_rows)
    result.table["thumbnail"] = [
        thumbnail_uri(Path(p), thumbnail_size) if i < thumbnails else None
        for i, p in enumerate(result.table["path"])
    ]
    log.info(
        "cleanlab flagged %d of %d images in the pooled %s predictions of %d runs.",
        len(table),
        len(pooled),
        subset,
        sum(run.completed for run in runs),
    )
    return result


def thumbnail_uri(path: Path, size: int = 96) -> str | None:
    """Shrink the image at ``path`` to at most ``size`` pixels a side and encode it as a PNG
    data URI; return None when the file is missing or not an image."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
    except (FileNotFoundError, UnidentifiedImageError, OSError):
        return None
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
