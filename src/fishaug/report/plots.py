"""Report figures, each written as a PNG: metric per configuration, n-by-m heatmaps, per-class
differences, confusion matrices, validation against test, and run time per technique."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fishaug.evaluation.outputs import write_confusion  # noqa: E402
from fishaug.report.runs import Run  # noqa: E402

log = logging.getLogger(__name__)


@dataclass
class Figure:
    """A written figure: the section it belongs to, its title and its PNG file."""

    section: str
    title: str
    path: Path


def slug(text: str) -> str:
    """Turn a configuration label into a file name part (letters, digits, ``_``, ``=``, ``-``)."""
    return re.sub(r"[^A-Za-z0-9_=-]+", "_", text).strip("_") or "run"


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_metric_bars(summary: pd.DataFrame, metric: str, path: Path) -> Path:
    """Horizontal bars of the mean ``metric`` per configuration with the std as error bars;
    baselines are drawn in grey."""
    data = summary.iloc[::-1]
    height = 1.0 + 0.35 * len(data)
    figure, axes = plt.subplots(figsize=(7.5, height))
    colours = ["0.6" if b else "tab:blue" for b in data["is_baseline"]]
    axes.barh(
        data["configuration"],
        data[f"{metric} mean"],
        xerr=data[f"{metric} std"].fillna(0.0),
        color=colours,
        capsize=3,
    )
    axes.set_xlabel(f"{metric} (mean and std over folds and seeds)")
    axes.set_title(f"{metric} per configuration (grey: baseline)")
    axes.set_xlim(0.0, 1.0)
    return _save(figure, path)


def plot_heatmaps(
    table: pd.DataFrame, summary: pd.DataFrame, keys: Sequence[str], metric: str, folder: Path
) -> list[Figure]:
    """Write one heatmap per augmentation that was swept over exactly two of its parameters.

    Each cell shows the mean ``metric`` of one configuration and, below it, the difference to
    its baseline. Configurations that also differ in other keys (model, split scheme) get one
    heatmap per combination of those keys.
    """
    means = summary.set_index("configuration")
    other = [k for k in keys if not k.startswith("aug.")]
    done = table[table["status"] == "completed"]
    figures = []
    for aug, rows in done.groupby("aug", sort=False):
        params = [
            k for k in keys if k.startswith("aug.") and k != "aug.name" and rows[k].nunique() > 1
        ]
        if len(params) != 2:
            if len(params) > 2:
                log.info(
                    "No heatmap for %s: it was swept over %d parameters, not 2.", aug, len(params)
                )
            continue
        groups = rows.groupby(other, dropna=False, sort=False) if other else [((), rows)]
        for context, group in groups:
            context = context if isinstance(context, tuple) else (context,)
            suffix = " ".join(
                f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(other, context, strict=True)
            )
            title = f"{aug} {suffix}".strip()
            path = folder / f"heatmap_{slug(title)}.png"
            figures.append(
                Figure("heatmap", title, _heatmap(group, means, params, metric, title, path))
            )
    return figures


def _heatmap(
    rows: pd.DataFrame, means: pd.DataFrame, params: list[str], metric: str, title: str, path: Path
) -> Path:
    labels = rows.drop_duplicates("configuration").set_index("configuration")
    first, second = params
    ys = sorted(labels[first].unique())
    xs = sorted(labels[second].unique())
    values = np.full((len(ys), len(xs)), np.nan)
    notes = [["" for _ in xs] for _ in ys]
    for label, row in labels.iterrows():
        i, j = ys.index(row[first]), xs.index(row[second])
        values[i, j] = means.loc[label, f"{metric} mean"]
        diff = means.loc[label, f"{metric} diff"]
        notes[i][j] = f"{values[i, j]:.3f}" + ("" if pd.isna(diff) else f"\n{diff:+.3f}")

    figure, axes = plt.subplots(figsize=(1.6 + 1.1 * len(xs), 1.4 + 0.8 * len(ys)))
    image = axes.imshow(values, cmap="viridis", aspect="auto")
    axes.set_xticks(range(len(xs)), [_tick(x) for x in xs])
    axes.set_yticks(range(len(ys)), [_tick(y) for y in ys])
    axes.set_xlabel(second)
    axes.set_ylabel(first)
    axes.set_title(f"{title}: mean {metric}\n(second line: difference to the baseline)", fontsize=9)
    low, high = np.nanmin(values), np.nanmax(values)
    for i in range(len(ys)):
        for j in range(len(xs)):
            # viridis is dark at the low end and light at the high end.
            share = (values[i, j] - low) / (high - low) if high > low else 0.0
            colour = "black" if share > 0.6 else "white"
            axes.text(j, i, notes[i][j], ha="center", va="center", color=colour, fontsize=8)
    figure.colorbar(image, ax=axes, fraction=0.046)
    return _save(figure, path)


def _tick(value: object) -> str:
    """Whole numbers without the ``.0`` that a column with missing values gives them."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def plot_per_class_difference(difference: pd.DataFrame, metric: str, path: Path) -> Path:
    """Heatmap of the per-class difference to the baseline: rows configurations, columns
    classes, red below and blue above the baseline."""
    limit = max(float(np.nanmax(np.abs(difference.to_numpy(dtype=float)))), 0.05)
    figure, axes = plt.subplots(
        figsize=(2.5 + 0.9 * difference.shape[1], 1.2 + 0.4 * difference.shape[0])
    )
    image = axes.imshow(
        difference.to_numpy(dtype=float), cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto"
    )
    axes.set_xticks(range(difference.shape[1]), difference.columns, rotation=45, ha="right")
    axes.set_yticks(range(difference.shape[0]), difference.index)
    axes.set_title(f"per-class {metric}: difference to the baseline")
    for (i, j), value in np.ndenumerate(difference.to_numpy(dtype=float)):
        if not np.isnan(value):
            colour = "white" if abs(value) > 0.6 * limit else "black"
            axes.text(j, i, f"{value:+.2f}", ha="center", va="center", fontsize=7, color=colour)
    figure.colorbar(image, ax=axes, fraction=0.046)
    return _save(figure, path)


def write_confusions(
    runs: Sequence[Run],
    table: pd.DataFrame,
    classes: Sequence[str],
    subset: str,
    normalize: str,
    folder: Path,
) -> list[Figure]:
    """Confusion matrix per configuration, counts summed over its runs, then normalised.

    ``normalize``: ``true`` (rows sum to 1: recall per class), ``pred`` (columns sum to 1:
    precision per class), ``all`` or ``none`` (counts). Writes ``confusion_<label>.csv|png``.
    """
    index = {label: i for i, label in enumerate(classes)}
    counts: dict[str, np.ndarray] = {}
    used: dict[str, int] = {}
    for run, label, status in zip(runs, table["configuration"], table["status"], strict=True):
        predictions = run.predictions(subset) if status == "completed" else None
        if predictions is None:
            continue
        matrix = counts.setdefault(label, np.zeros((len(classes), len(classes))))
        rows = predictions["label"].map(index)
        cols = predictions["pred"].map(index)
        known = rows.notna() & cols.notna()
        np.add.at(matrix, (rows[known].astype(int), cols[known].astype(int)), 1)
        used[label] = used.get(label, 0) + 1

    figures = []
    for label, matrix in counts.items():
        normalised = _normalise(matrix, normalize)
        title = f"{label}\n{subset}, {used[label]} runs, {_NORMALISE_TEXT[normalize]}"
        stem = folder / f"confusion_{slug(label)}"
        write_confusion(stem, normalised, classes, title)
        figures.append(Figure("confusion", label, stem.with_suffix(".png")))
    return figures


_NORMALISE_TEXT = {
    "true": "rows sum to 1",
    "pred": "columns sum to 1",
    "all": "all cells sum to 1",
    "none": "counts",
}


def _normalise(matrix: np.ndarray, normalize: str) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        if normalize == "true":
            result = matrix / matrix.sum(axis=1, keepdims=True)
        elif normalize == "pred":
            result = matrix / matrix.sum(axis=0, keepdims=True)
        elif normalize == "all":
            result = matrix / matrix.sum()
        else:
            return matrix
    return np.nan_to_num(result)


def plot_gap(gaps: pd.DataFrame, table: pd.DataFrame, path: Path) -> Path:
    """Scatter of validation against test macro F1 per run; points above the diagonal are
    runs whose validation score flattered them."""
    figure, axes = plt.subplots(figsize=(5.5, 5.0))
    augs = table.set_index("configuration")["aug"].to_dict()
    for aug, rows in gaps.groupby(gaps["configuration"].map(augs), sort=False):
        axes.scatter(rows["test/f1_macro"], rows["val/f1_macro"], label=aug, alpha=0.8)
    axes.plot([0, 1], [0, 1], color="0.5", linestyle="--", linewidth=1)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("test macro F1")
    axes.set_ylabel("val macro F1")
    axes.set_title("validation against test per run (above the line: val flatters)")
    axes.legend(fontsize=8)
    return _save(figure, path)


def plot_timing(per_aug: pd.DataFrame, path: Path) -> Path:
    """Bars of the total run time per augmentation technique, in minutes."""
    figure, axes = plt.subplots(figsize=(6.0, 1.2 + 0.4 * len(per_aug)))
    axes.barh(per_aug["aug"], per_aug["total_s"] / 60.0, color="tab:orange")
    for y, (total, jobs) in enumerate(zip(per_aug["total_s"], per_aug["jobs"], strict=True)):
        axes.text(total / 60.0, y, f" {jobs} jobs", va="center", fontsize=8)
    axes.set_xlabel("total run time (fit + test), minutes")
    axes.set_title("run time per technique")
    return _save(figure, path)
