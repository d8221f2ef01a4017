"""Paired comparison of each configuration with its baseline across folds and seeds.

Runs of a configuration and of its baseline with the same fold and seed saw the same train,
val and test images, so their difference removes the variation between folds. The mean
paired difference gets a percentile bootstrap confidence interval (Efron and Tibshirani,
"An Introduction to the Bootstrap", 1993, chapter 13).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fishaug.errors import ConfigError


def bootstrap_mean_interval(
    differences: np.ndarray, resamples: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``differences`` (shape (n,), n >= 1).

    NOTE: the interval never extends past the range of the observed differences. With few
    pairs (fewer than about 5 folds) it is therefore too narrow, so read it with the number of
    pairs.
    """
    if not 0.0 < confidence < 1.0:
        raise ConfigError(
            f"confidence={confidence} is not valid; use a value in (0, 1), e.g. 0.95."
        )
    if resamples < 1:
        raise ConfigError(f"resamples={resamples} is not valid; use a positive whole number.")
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(differences), size=(resamples, len(differences)))
    means = differences[index].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def paired_comparison(
    table: pd.DataFrame,
    metric: str,
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Compare each configuration with its baseline, pairing runs by fold and seed.

    Args:
        table: the run table (see :func:`fishaug.report.tables.run_table`), with
            ``configuration``, ``baseline``, ``is_baseline``, ``repeat``, ``status`` and
            ``metric`` columns.

    Returns one row per configuration that has a baseline, with the columns
    ``configuration``, ``baseline``, ``pairs``, ``mean diff``, ``ci low`` and ``ci high`` (NaN
    below two pairs), ``wins`` and ``losses`` (pairs where the configuration is better or
    worse), and ``verdict``. The verdict is ``better`` or ``worse`` when the interval excludes
    0, ``no clear difference`` when it contains 0, and ``too few pairs`` below two pairs.
    """
    done = table[(table["status"] == "completed") & table[metric].notna()]
    rows = []
    for label, group in done[~done["is_baseline"]].groupby("configuration", sort=False):
        baseline = group["baseline"].iloc[0]
        if baseline is None or pd.isna(baseline):
            continue
        reference = done[done["configuration"] == baseline]
        pairs = (
            group.groupby("repeat")[metric]
            .mean()
            .to_frame("value")
            .join(reference.groupby("repeat")[metric].mean().to_frame("reference"), how="inner")
        )
        differences = (pairs["value"] - pairs["reference"]).to_numpy()
        row = {
            "configuration": label,
            "baseline": baseline,
            "pairs": len(differences),
            "mean diff": differences.mean() if len(differences) else np.nan,
            "ci low": np.nan,
            "ci high": np.nan,
            "wins": int((differences > 0).sum()),
            "losses": int((differences < 0).sum()),
            "verdict": "too few pairs",
        }
        if len(differences) >= 2:
            low, high = bootstrap_mean_interval(differences, resamples, confidence, seed)
            row.update({"ci low": low, "ci high": high})
            if low > 0:
                row["verdict"] = "better"
            elif high < 0:
                row["verdict"] = "worse"
            else:
                row["verdict"] = "no clear difference"
        rows.append(row)
    columns = ["configuration", "baseline", "pairs", "mean diff", "ci low", "ci high"]
    result = pd.DataFrame(rows, columns=[*columns, "wins", "losses", "verdict"])
    return result.sort_values("mean diff", ascending=False, ignore_index=True)
