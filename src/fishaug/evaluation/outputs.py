"""Files a run writes about one evaluated subset: predictions and confusion matrices."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402


def write_predictions(
    path: Path, rows: pd.DataFrame, probs: torch.Tensor, class_names: Sequence[str]
) -> None:
    """Write ``path, label, pred`` and one ``prob_<class>`` column per class, in ``rows`` order."""
    frame = rows[["path", "label", "video"]].copy()
    if "track" in rows.columns:
        frame["track"] = rows["track"].to_numpy()
    frame["pred"] = [class_names[i] for i in probs.argmax(dim=1).tolist()]
    for index, name in enumerate(class_names):
        frame[f"prob_{name}"] = probs[:, index].numpy()
    frame.to_csv(path, index=False, float_format="%.6g")


def write_confusion(stem: Path, matrix: np.ndarray, class_names: Sequence[str], title: str) -> None:
    """Write a confusion matrix as ``<stem>.csv`` and a heatmap ``<stem>.png``."""
    table = pd.DataFrame(matrix, index=list(class_names), columns=list(class_names))
    table.index.name = "true \\ pred"
    table.to_csv(stem.with_suffix(".csv"), float_format="%.6g")

    size = 1.2 + 0.6 * len(class_names)
    figure, axes = plt.subplots(figsize=(size + 1.5, size))
    image = axes.imshow(matrix, cmap="Blues", vmin=0.0, vmax=max(1.0, float(matrix.max())))
    axes.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    axes.set_yticks(range(len(class_names)), class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    for (i, j), value in np.ndenumerate(matrix):
        colour = "white" if value > 0.5 else "black"
        axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color=colour)
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    figure.savefig(stem.with_suffix(".png"), dpi=100)
    plt.close(figure)
