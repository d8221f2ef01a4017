"""Tables that compare configurations: metrics per run, mean and std per configuration, the
difference to the baseline, per-class F1, the validation-test gap and run time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from fishaug.errors import ConfigError
from fishaug.report.runs import Run

TIME_KEYS = ("time/fit_s", "time/test_s", "time/epoch_s")


def available_metrics(runs: Sequence[Run]) -> list[str]:
    """Return the numeric metric keys of the completed runs, per-class keys left out."""
    keys: dict[str, None] = {}
    for run in runs:
        for key, value in run.metrics.items():
            if key.count("/") == 1 and isinstance(value, (int, float)):
                keys[key] = None
    return sorted(keys)


def check_metrics(names: Sequence[str], subset: str, runs: Sequence[Run]) -> None:
    """Raise ConfigError naming each metric that no completed run has for ``subset``.

    ``names`` are metric names without the subset prefix (``f1_macro``); the message lists the
    available ones.
    """
    completed = [run for run in runs if run.completed]
    if not completed:
        return
    prefix = f"{subset}/"
    available = [k[len(prefix) :] for k in available_metrics(completed) if k.startswith(prefix)]
    unknown = [name for name in names if name not in available]
    if unknown:
        raise ConfigError(
            f"Metric(s) {unknown} are not among the {subset} metrics of any run's metrics.json; "
            f"available: {available}. Set metrics and sort_metric to names from this list."
        )


def run_table(
    runs: Sequence[Run], configurations: pd.DataFrame, metrics: Sequence[str]
) -> pd.DataFrame:
    """Add metric columns to ``configurations``: each of ``metrics``, val and test macro F1,
    their gap (val minus test) and the run times. Runs without metrics get NaN."""
    keys = list(dict.fromkeys([*metrics, "val/f1_macro", "test/f1_macro", *TIME_KEYS]))
    values = pd.DataFrame(
        [{key: _number(run.metrics.get(key)) for key in keys} for run in runs],
        index=configurations.index,
    )
    table = pd.concat([configurations, values], axis=1)
    table["gap/f1_macro"] = table["val/f1_macro"] - table["test/f1_macro"]
    return table


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else np.nan


def summary_table(table: pd.DataFrame, metrics: Sequence[str], sort_metric: str) -> pd.DataFrame:
    """Compute mean and standard deviation over folds and seeds per configuration, best first.

    Columns: ``configuration``, ``baseline`` (its baseline's label), ``is_baseline``, ``runs``
    (completed), ``failed`` (failed or incomplete), ``<metric> mean`` and ``<metric> std``
    (sample standard deviation, NaN for one run) per metric, and ``<sort_metric> diff``, the
    difference of means to the baseline. Configurations without a completed run are left out;
    their failures are in the failed-job list.
    """
    done = table[table["status"] == "completed"]
    rows = []
    for label, group in done.groupby("configuration", sort=False):
        row: dict[str, Any] = {
            "configuration": label,
            "baseline": group["baseline"].iloc[0],
            "is_baseline": bool(group["is_baseline"].iloc[0]),
            "runs": len(group),
            "failed": int(
                ((table["configuration"] == label) & (table["status"] != "completed")).sum()
            ),
        }
        for metric in metrics:
            row[f"{metric} mean"] = group[metric].mean()
            row[f"{metric} std"] = group[metric].std(ddof=1)
        rows.append(row)
    summary = pd.DataFrame(rows)
    if summary.empty:
        return summary

    means = summary.set_index("configuration")[f"{sort_metric} mean"]
    summary[f"{sort_metric} diff"] = [
        row[f"{sort_metric} mean"] - means[row["baseline"]]
        if row["baseline"] in means.index
        else np.nan
        for _, row in summary.iterrows()
    ]
    return summary.sort_values(f"{sort_metric} mean", ascending=False, ignore_index=True)


def per_class_table(
    runs: Sequence[Run], table: pd.DataFrame, subset: str, metric: str = "f1"
) -> pd.DataFrame:
    """Average the per-class ``metric`` per configuration: rows configurations, columns classes.

    A class with no images in a run's subset (value null in ``metrics.json``) is left out of
    that run's mean.
    """
    rows = []
    for run, label, status in zip(runs, table["configuration"], table["status"], strict=True):
        if status != "completed":
            continue
        prefix = f"{subset}/{metric}/"
        values = {
            key[len(prefix) :]: _number(value)
            for key, value in run.metrics.items()
            if key.startswith(prefix)
        }
        rows.append({"configuration": label, **values})
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).groupby("configuration", sort=False).mean()


def per_class_difference(per_class: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Subtract each configuration's baseline from its per-class values; baselines left out."""
    baselines = summary.set_index("configuration")["baseline"]
    rows = {}
    for label, values in per_class.iterrows():
        baseline = baselines.get(label)
        if baseline is None or baseline == label or baseline not in per_class.index:
            continue
        rows[label] = values - per_class.loc[baseline]
    return pd.DataFrame(rows).T if rows else pd.DataFrame()


def gap_table(table: pd.DataFrame) -> pd.DataFrame:
    """List validation and test macro F1 per completed run and their gap (val minus test).

    A large positive gap means validation flattered the model, as it does when frames of one
    video are in both train and val.
    """
    done = table[table["status"] == "completed"]
    columns = ["configuration", "repeat", "val/f1_macro", "test/f1_macro", "gap/f1_macro"]
    return done[columns].sort_values("gap/f1_macro", ascending=False, ignore_index=True)


def timing_tables(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tabulate the run time per job, and the total and mean time per augmentation technique.

    The per-job table has ``configuration``, ``repeat``, ``status`` and the ``time/`` keys
    plus ``time/total_s`` (fit plus test). The per-technique table has ``aug``, ``jobs``
    (with a run time), ``total_s``, ``mean_per_job_s`` and ``mean_epoch_s``.
    """
    jobs = table[["configuration", "aug", "repeat", "status", *TIME_KEYS]].copy()
    jobs["time/total_s"] = jobs["time/fit_s"].fillna(0) + jobs["time/test_s"].fillna(0)
    jobs.loc[jobs["time/fit_s"].isna() & jobs["time/test_s"].isna(), "time/total_s"] = np.nan
    timed = jobs.dropna(subset=["time/total_s"])
    per_aug = (
        timed.groupby("aug", sort=False)
        .agg(
            jobs=("time/total_s", "size"),
            total_s=("time/total_s", "sum"),
            mean_per_job_s=("time/total_s", "mean"),
            mean_epoch_s=("time/epoch_s", "mean"),
        )
        .reset_index()
        .sort_values("total_s", ascending=False, ignore_index=True)
    )
    return jobs.drop(columns="aug"), per_aug


def failed_table(table: pd.DataFrame) -> pd.DataFrame:
    """Select the jobs that failed or did not finish, with the reason and the folder."""
    columns = ["configuration", "repeat", "status", "reason", "run"]
    return table.loc[table["status"] != "completed", columns].reset_index(drop=True)


def markdown_table(frame: pd.DataFrame, float_format: str = "{:.4f}", index: bool = False) -> str:
    """Render a DataFrame as a GitHub Markdown table; NaN and None print as empty cells."""
    if frame.empty:
        return "_(none)_\n"
    data = frame.reset_index() if index else frame
    header = [str(c) for c in data.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in data.itertuples(index=False):
        cells = [_cell(value, float_format) for value in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: Any, float_format: str) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        return float_format.format(value)
    return str(value).replace("|", "\\|").replace("\n", " ")
