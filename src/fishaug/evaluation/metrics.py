"""Classification metrics over the global class list, flat-keyed for ``metrics.json``.

Macro averages follow torchmetrics: a class with no images in the evaluated subset that the model
also never predicts is left out of the average, and its per-class values are None. A class with
no images that the model does predict counts with precision, recall and F1 of 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torchmetrics.functional.classification as tmf

MACRO_METRICS = {
    "precision": tmf.multiclass_precision,
    "recall": tmf.multiclass_recall,
    "specificity": tmf.multiclass_specificity,
    "f1": tmf.multiclass_f1_score,
}


def classification_metrics(
    probs: torch.Tensor,
    targets: torch.Tensor,
    class_names: Sequence[str],
    prefix: str,
    tracks: Sequence[str] | None = None,
) -> dict[str, float | None]:
    """Compute accuracy and macro/per-class precision, recall, specificity and F1.

    Args:
        probs: (N, C) class probabilities, C = len(class_names).
        targets: (N,) integer class indices.
        prefix: ``val`` or ``test``; keys read ``<prefix>/f1_macro``, ``<prefix>/f1/<label>``.
        tracks: one track id per row; adds ``<prefix>/track_acc_maxprob`` and
            ``<prefix>/track_acc_vote``.
    """
    num_classes = len(class_names)
    preds = probs.argmax(dim=1)
    metrics: dict[str, float | None] = {
        f"{prefix}/acc": tmf.multiclass_accuracy(
            preds, targets, num_classes, average="micro"
        ).item(),
    }
    present = torch.bincount(targets, minlength=num_classes) + torch.bincount(
        preds, minlength=num_classes
    )
    for name, function in MACRO_METRICS.items():
        metrics[f"{prefix}/{name}_macro"] = function(
            preds, targets, num_classes, average="macro"
        ).item()
        per_class = function(preds, targets, num_classes, average="none")
        for index, label in enumerate(class_names):
            value = per_class[index].item() if present[index] > 0 else None
            metrics[f"{prefix}/{name}/{label}"] = value
    support = torch.bincount(targets, minlength=num_classes)
    for index, label in enumerate(class_names):
        metrics[f"{prefix}/support/{label}"] = int(support[index])

    if tracks is not None:
        metrics.update(track_accuracy(probs, targets, tracks, prefix))
    return metrics


def track_accuracy(
    probs: torch.Tensor, targets: torch.Tensor, tracks: Sequence[str], prefix: str
) -> dict[str, float]:
    """Accuracy per fish track, combining a track's images two ways.

    ``maxprob`` sums the class probabilities of a track's images and takes the largest sum;
    ``vote`` takes the most frequent per-image prediction, ties going to the class with the
    larger summed probability. A track's label is its most frequent image label.
    """
    frame = pd.DataFrame(probs.numpy())
    frame["track"] = list(tracks)
    frame["target"] = targets.numpy()
    frame["pred"] = probs.argmax(dim=1).numpy()
    num_classes = probs.shape[1]

    correct_maxprob = correct_vote = 0
    groups = frame.groupby("track", sort=False)
    for _, rows in groups:
        summed = rows[list(range(num_classes))].to_numpy().sum(axis=0)
        votes = np.bincount(rows["pred"], minlength=num_classes).astype(float)
        votes += summed / (summed.sum() + 1.0)  # breaks ties without changing a clear majority
        label = rows["target"].mode().iloc[0]
        correct_maxprob += int(summed.argmax() == label)
        correct_vote += int(votes.argmax() == label)
    count = groups.ngroups
    return {
        f"{prefix}/track_acc_maxprob": correct_maxprob / count,
        f"{prefix}/track_acc_vote": correct_vote / count,
        f"{prefix}/num_tracks": count,
    }


def confusion_matrix(
    probs: torch.Tensor, targets: torch.Tensor, num_classes: int, normalize: str | None = "pred"
) -> np.ndarray:
    """Return the (C, C) confusion matrix, rows true and columns predicted classes.

    With ``normalize="pred"`` each column sums to 1 (the share of a predicted class that truly
    is each class); a class never predicted has a column of zeros.
    """
    if normalize not in (None, "pred", "true", "all"):
        raise ValueError(
            f"normalize={normalize!r} is not valid; use None, 'pred', 'true' or 'all'."
        )
    counts = tmf.multiclass_confusion_matrix(probs.argmax(dim=1), targets, num_classes)
    counts = counts.double().numpy()
    if normalize is None:
        return counts
    axis = {"pred": 0, "true": 1, "all": None}[normalize]
    totals = counts.sum(axis=axis, keepdims=axis is not None)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
