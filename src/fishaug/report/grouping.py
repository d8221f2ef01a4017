"""Group runs into configurations, find each configuration's baseline, and check comparability.

A configuration is a set of runs that differ only in their repeat keys (fold and seed by
default). Its label is the augmentation followed by the config values that differ between
runs, for example ``randaugment n=2 m=9``. The baseline of a configuration is the
configuration with the baseline augmentation (``none``) and the same values of every other
differing key, so a sweep over models and augmentations compares each model with its own
baseline.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pandas as pd

from fishaug.errors import ConfigError, DataError
from fishaug.report.runs import Run

log = logging.getLogger(__name__)

AUG_PREFIX = "aug."


def _ignored(key: str, ignore: Sequence[str]) -> bool:
    return any(key == prefix or key.startswith(f"{prefix}.") for prefix in ignore)


def differing_keys(runs: Sequence[Run], exclude: Sequence[str]) -> list[str]:
    """Return the config keys whose value differs between runs, in config order.

    Only runs that have a key count: a key added to the configs after some runs were made
    does not split them, and ``aug.n`` (RandAugment only) does not tell RandAugment from the
    baseline, which ``aug.name`` does. An augmentation parameter differs only between runs of
    the same augmentation. Keys whose value is an interpolation follow another key and are
    left out, as are keys under ``exclude``.
    """
    keys: dict[str, None] = {}
    for run in runs:
        keys.update(dict.fromkeys(run.config))
    interpolated = set().union(*(run.interpolated for run in runs)) if runs else set()

    result = []
    for key in keys:
        if _ignored(key, exclude) or key in interpolated:
            continue
        if key.startswith(AUG_PREFIX) and key != "aug.name":
            varies = _varies_within_aug(runs, key)
        else:
            varies = len({_hashable(run.config[key]) for run in runs if key in run.config}) > 1
        if varies:
            result.append(key)
    return result


def _varies_within_aug(runs: Sequence[Run], key: str) -> bool:
    values: dict[str, set[Any]] = {}
    for run in runs:
        if key in run.config:
            values.setdefault(run.aug, set()).add(_hashable(run.config[key]))
    return any(len(v) > 1 for v in values.values())


def _hashable(value: Any) -> Any:
    return tuple(map(_hashable, value)) if isinstance(value, list) else value


def configuration_label(run: Run, keys: Sequence[str]) -> str:
    """Label a run's configuration: the augmentation, then ``short=value`` per key.

    ``aug.n`` reads ``n`` and ``data.scheme`` reads ``scheme``; a short name shared by two
    keys keeps the full key.
    """
    shorts = [key.rsplit(".", 1)[-1] for key in keys]
    parts = [run.aug]
    for key, short in zip(keys, shorts, strict=True):
        if key == "aug.name" or key not in run.config:
            continue
        name = short if shorts.count(short) == 1 else key
        parts.append(f"{name}={_format(run.config[key])}")
    return " ".join(parts)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ",".join(_format(v) for v in value) + "]"
    return str(value)


def assign_configurations(
    runs: Sequence[Run],
    baseline_aug: str = "none",
    group_by: Sequence[str] | None = None,
    repeat_keys: Sequence[str] = ("data.fold", "seed"),
    ignore_keys: Sequence[str] = (),
) -> tuple[pd.DataFrame, list[str]]:
    """Return one row per run with its configuration, baseline and repeat, and the keys used.

    Args:
        baseline_aug: ``aug.name`` of the baseline runs.
        group_by: config keys that define a configuration; None uses the keys that differ
            between runs, apart from ``repeat_keys`` and ``ignore_keys``.
        repeat_keys: keys of repeats of one configuration (fold, seed); runs of two
            configurations with equal repeat values are compared in pairs.
        ignore_keys: keys (or prefixes) that neither define a configuration nor a repeat.

    Columns: ``run`` (folder), ``status``, ``reason``, ``configuration``, ``aug``,
    ``is_baseline``, ``baseline`` (the baseline's label, or None), ``repeat`` (for example
    ``fold=0 seed=0``), one column per repeat key and one per configuration key.

    Raises:
        ConfigError: a ``group_by`` key is in no run's config.
    """
    if group_by is not None:
        known = set().union(*(run.config for run in runs))
        missing = [key for key in group_by if key not in known]
        if missing:
            raise ConfigError(
                f"group_by keys {missing} are in no run's config; available keys include "
                f"{sorted(k for k in known if not _ignored(k, ignore_keys))[:40]}."
            )
        keys = list(group_by)
    else:
        keys = differing_keys(runs, exclude=[*repeat_keys, *ignore_keys])
    other_keys = [k for k in keys if not k.startswith(AUG_PREFIX)]

    rows = []
    for run in runs:
        context = tuple(_hashable(run.config.get(k)) for k in other_keys)
        rows.append(
            {
                "run": str(run.path),
                "status": run.status,
                "reason": run.reason,
                "configuration": configuration_label(run, keys),
                "aug": run.aug,
                "is_baseline": run.aug == baseline_aug,
                "_context": context,
                "repeat": " ".join(f"{_short(k)}={run.config.get(k)}" for k in repeat_keys),
                **{key: run.config.get(key) for key in repeat_keys},
                **{key: run.config.get(key) for key in keys if key not in repeat_keys},
            }
        )
    table = pd.DataFrame(rows)

    baselines: dict[tuple, str] = {}
    for context, label, is_baseline in zip(
        table["_context"], table["configuration"], table["is_baseline"], strict=True
    ):
        if is_baseline:
            baselines.setdefault(context, label)
    table["baseline"] = [baselines.get(context) for context in table["_context"]]
    return table.drop(columns="_context"), keys


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


# Dataset keys that change how data is fetched or checked, not which images there are.
DATASET_SETUP_KEYS = ("dataset.download", "dataset.url", "dataset.min_images")


def dataset_identity(run: Run) -> dict[str, Any]:
    """Collect the values that must agree for runs to be compared: the dataset choice, every
    ``dataset.*`` setting (root, manifest path, simulator settings...) and the class list."""
    identity: dict[str, Any] = {
        "dataset": run.choices.get("dataset", run.config.get("dataset._target_"))
    }
    for key, value in run.config.items():
        if key.startswith("dataset.") and key not in DATASET_SETUP_KEYS:
            identity[key] = _hashable(value)
    identity["classes"] = ",".join(run.classes) if run.classes else None
    return identity


def check_comparable(runs: Sequence[Run], force: bool = False) -> list[str]:
    """Check that all runs used one dataset and one class list; return warnings.

    A value missing from a run (an older config without the key, or a run that failed before
    writing predictions, so without a class list) is not compared.

    Raises:
        DataError: the runs differ in a dataset setting or the class list, unless ``force``.
            The message names each differing value, its number of runs and one example run.
    """
    identities = pd.DataFrame([dataset_identity(run) for run in runs])
    identities["run"] = [str(run.path) for run in runs]
    problems = []
    for column in identities.columns.drop("run"):
        present = identities.dropna(subset=[column])
        if present[column].nunique() <= 1:
            continue
        described = "; ".join(
            f"{column}={value!s} ({len(group)} runs, for example {group.iloc[0]})"
            for value, group in present.groupby(column)["run"]
        )
        problems.append(f"the runs differ in {column}: {described}")
    if not problems:
        return []

    message = "Runs of different datasets cannot be compared: " + ". ".join(problems)
    if not force:
        raise DataError(f"{message}. Pass force=true to compare them anyway.")
    log.warning("%s. Comparing them anyway because force=true.", message)
    return [f"{message}. Compared anyway because force=true."]
