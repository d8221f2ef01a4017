"""``aug=synthetic``: add images of synthetic sets to the training split, plus an inner augmentation.

The object the builder returns is the training transform (it applies the inner augmentation,
for example RandAugment, to real and synthetic images alike) and also provides
``extra_train_rows(split)``, which the DataModule calls once the split is known. That method
refuses a set made from any of the run's val or test videos, then picks the synthetic rows to
add, per class, within the ratio and the cap.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from fishaug.augment.registry import build_augmentation, register
from fishaug.data.transforms import ImageTransform
from fishaug.errors import ConfigError, DataError
from fishaug.synth.provenance import check_no_leak
from fishaug.synth.sets import read_set

log = logging.getLogger(__name__)


class SyntheticImages:
    """Training transform that also supplies synthetic training rows.

    Args:
        sets: set folder to its rows (absolute paths) and the real videos of its provenance.
        ratio: at most ``ratio`` synthetic images per real training image of the same class;
            None for no such limit.
        max_per_class: at most this many synthetic images per class; None for no cap.
        inner: PIL-to-PIL augmentation for every training image, or None.
        seed: seed of the random choice when a limit applies and the set has no ``score``.
    """

    def __init__(
        self,
        sets: Mapping[str, tuple[pd.DataFrame, list[str]]],
        ratio: float | None,
        max_per_class: int | None,
        inner: ImageTransform | None,
        seed: int,
    ):
        self.sets = dict(sets)
        self.ratio = ratio
        self.max_per_class = max_per_class
        self.inner = inner
        self.seed = seed

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if self.inner is None else self.inner(image)

    def extra_train_rows(self, split: pd.DataFrame) -> pd.DataFrame:
        """Return the synthetic rows to add to the training subset of ``split``.

        Raises:
            DataError: a set was made from a val or test video of ``split``, has a label that is
                not a class of the split, or lists an image that does not exist.
        """
        for folder, (_, videos) in self.sets.items():
            check_no_leak(videos, split, origin=f"Synthetic set '{folder}'")

        rows = pd.concat([frame for frame, _ in self.sets.values()], ignore_index=True)
        classes = set(split["label"])
        unknown = sorted(set(rows["label"]) - classes)
        if unknown:
            raise DataError(
                f"Synthetic sets {list(self.sets)} have label(s) {unknown} that are not classes "
                f"of this dataset ({sorted(classes)}). Generate only the dataset's classes "
                "(generate.classes=[...]) or use a set made for this dataset."
            )
        missing = [p for p in rows["path"] if not Path(p).is_file()]
        if missing:
            raise DataError(
                f"{len(missing)} image(s) of the synthetic sets do not exist, for example "
                f"'{missing[0]}'. Re-run the step that made the set."
            )

        real_counts = split[split["subset"] == "train"].groupby("label").size()
        rng = np.random.default_rng(self.seed)
        chosen = []
        summary = []
        for label, group in rows.groupby("label", sort=True):
            limit = len(group)
            if self.ratio is not None:
                limit = min(limit, math.floor(self.ratio * int(real_counts.get(label, 0))))
            if self.max_per_class is not None:
                limit = min(limit, self.max_per_class)
            chosen.append(self._pick(group, limit, rng))
            summary.append(f"{label}: {limit} of {len(group)} (real {real_counts.get(label, 0)})")
        extra = pd.concat(chosen, ignore_index=True)
        log.info(
            "Adding %d synthetic training images from %d set(s); per class %s",
            len(extra),
            len(self.sets),
            "; ".join(summary),
        )
        return extra

    def _pick(self, group: pd.DataFrame, count: int, rng: np.random.Generator) -> pd.DataFrame:
        if count >= len(group):
            return group
        if "score" in group.columns and group["score"].notna().all():
            return group.sort_values("score", ascending=False, kind="stable").head(count)
        return group.iloc[np.sort(rng.permutation(len(group))[:count])]

    def __repr__(self) -> str:
        return (
            f"SyntheticImages(sets={list(self.sets)}, ratio={self.ratio}, "
            f"max_per_class={self.max_per_class}, inner={self.inner!r})"
        )


@register("synthetic")
def synthetic(
    sets: Sequence[str] | str = (),
    ratio: float | None = None,
    max_per_class: int | None = None,
    inner: str | Mapping[str, Any] | None = "none",
    seed: int = 0,
) -> SyntheticImages:
    """Synthetic images from ``sets`` for the training split, with the ``inner`` augmentation.

    Args:
        sets: folders made by ``synth.py step=generate`` or ``step=filter`` (each with
            ``manifest.csv`` and ``provenance.json``), or their manifest files.
        ratio: at most this many synthetic images per real training image of a class.
        max_per_class: at most this many synthetic images per class.
        inner: an ``aug`` name (``randaugment``) or a mapping with ``name`` and its parameters
            (``{name: randaugment, n: 2, m: 9}``), applied to real and synthetic images.
        seed: the run's seed.

    Raises:
        ConfigError: no sets, a limit out of range, or an invalid inner augmentation.
        DataError: a set folder, manifest or provenance file is missing or malformed.
    """
    folders = [sets] if isinstance(sets, str) else list(sets)
    if not folders:
        raise ConfigError(
            "aug.sets is empty; list synthetic set folders, for example "
            "aug.sets=[data/synth/<name>/filtered]."
        )
    if ratio is not None and (
        isinstance(ratio, bool)
        or not isinstance(ratio, int | float)
        or not math.isfinite(ratio)
        or ratio < 0
    ):
        raise ConfigError(f"aug.ratio={ratio!r} is out of range; use a number >= 0, or null.")
    if max_per_class is not None and (
        isinstance(max_per_class, bool) or not isinstance(max_per_class, int) or max_per_class < 0
    ):
        raise ConfigError(
            f"aug.max_per_class={max_per_class!r} is out of range; use a whole number >= 0, "
            "or null."
        )

    if inner is None:
        inner = "none"
    inner_config = {"name": inner} if isinstance(inner, str) else dict(inner)
    if inner_config.get("name") == "synthetic":
        raise ConfigError("aug.inner=synthetic is not valid; pick an image augmentation.")
    try:
        inner_transform = build_augmentation(inner_config, seed=seed)
    except ConfigError as error:
        raise ConfigError(f"aug.inner: {error}") from error

    loaded = {str(folder): read_set(folder) for folder in folders}
    return SyntheticImages(loaded, ratio, max_per_class, inner_transform, seed)
