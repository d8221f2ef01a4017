"""Split schemes: a held-out test set of whole videos, then train/val by one of two schemes.

``random_split`` ("4vs1") shuffles the remaining images 70/30 into train/val within each class.
Frames of one video then land on both sides, and the scheme is kept to show how much that leakage
flatters validation. ``video_folds`` ("3+1vs1") deals each class's remaining videos into K folds and takes
one fold as validation, so no video appears in two of train, val and test.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from fishaug.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SUBSETS = ("train", "val", "test")


def hold_out_test(
    manifest: pd.DataFrame,
    test_videos: Sequence[str] | None = None,
    test_per_class: float = 0.2,
    seed: int = 0,
    min_remaining: int = 1,
) -> pd.Series:
    """Choose whole videos per class for the test set; return a boolean mask of test rows.

    Args:
        test_videos: explicit video ids; when given, ``test_per_class`` is ignored.
        test_per_class: videos per class for the test set, as a count (an integer >= 1) or a
            fraction of the class's videos (0 < f < 1, rounded, at least one video).
        seed: seed of the video choice.
        min_remaining: videos each class must keep outside the test set.

    Raises:
        ConfigError: ``test_per_class`` is out of range or a named test video does not exist.
        DataError: a class has too few videos for the hold-out plus ``min_remaining``.
    """
    if test_videos is not None:
        test_videos = [str(v) for v in test_videos]
        unknown = sorted(set(test_videos) - set(manifest["video"]))
        if unknown:
            raise ConfigError(
                f"data.test_videos names videos not in the dataset: {unknown[:5]}. "
                "Use ids from the manifest's 'video' column."
            )
        mask = manifest["video"].isin(test_videos)
        _check_remaining(manifest[~mask], manifest, min_remaining, "train and val")
        return mask

    _check_count_or_fraction(test_per_class, "data.test_per_class")
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    for label, videos in _videos_per_class(manifest).items():
        count = _count(test_per_class, len(videos))
        if len(videos) < count + min_remaining:
            raise DataError(
                f"Class '{label}' has {len(videos)} videos, too few to hold out {count} for test "
                f"and keep {min_remaining} for train/val. Lower data.test_per_class or "
                "data.num_folds, or add videos of this class."
            )
        chosen.extend(rng.choice(videos, size=count, replace=False).tolist())
    return manifest["video"].isin(chosen)


def random_split(
    manifest: pd.DataFrame,
    test_mask: pd.Series,
    val_fraction: float = 0.3,
    seed: int = 0,
) -> pd.Series:
    """Shuffle the non-test images of each class into train and val ("4vs1"); return the subsets.

    Frames of one video end up in both train and val on purpose: this scheme exists to show how
    much that leakage inflates validation scores against the held-out test videos.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction={val_fraction} is out of range; use 0 < f < 1.")
    subset = pd.Series("train", index=manifest.index, dtype=object)
    subset[test_mask] = "test"
    rng = np.random.default_rng(seed)
    for _, rows in manifest[~test_mask].groupby("label", sort=True):
        index = rng.permutation(rows.index.to_numpy())
        n_val = int(round(val_fraction * len(index)))
        n_val = min(max(n_val, 1), len(index) - 1) if len(index) > 1 else 0
        subset[index[:n_val]] = "val"
    return subset


def video_folds(
    manifest: pd.DataFrame,
    test_mask: pd.Series,
    num_folds: int = 4,
    fold: int = 0,
    seed: int = 0,
) -> pd.Series:
    """Deal each class's non-test videos into ``num_folds`` folds; fold ``fold`` becomes val.

    Raises:
        ConfigError: ``num_folds`` < 2 or ``fold`` outside ``[0, num_folds)``.
        DataError: a class has fewer non-test videos than folds.
    """
    if num_folds < 2:
        raise ConfigError(f"data.num_folds={num_folds} is out of range; use 2 or more.")
    if not 0 <= fold < num_folds:
        raise ConfigError(
            f"data.fold={fold} is out of range for data.num_folds={num_folds}; "
            f"use 0 to {num_folds - 1}."
        )
    remaining = manifest[~test_mask]
    _check_remaining(remaining, manifest, num_folds, f"data.num_folds={num_folds} folds")

    rng = np.random.default_rng(seed)
    val_videos: list[str] = []
    for _, videos in _videos_per_class(remaining).items():
        shuffled = rng.permutation(videos)
        # Dealing round-robin keeps fold sizes within one video of each other per class.
        val_videos.extend(v for i, v in enumerate(shuffled) if i % num_folds == fold)

    subset = pd.Series("train", index=manifest.index, dtype=object)
    subset[test_mask] = "test"
    subset[~test_mask & manifest["video"].isin(val_videos)] = "val"
    return subset


def check_split(split: pd.DataFrame, class_names: Sequence[str], allow_shared_videos: bool) -> None:
    """Reject a split that cannot train or evaluate honestly.

    Raises:
        DataError: a subset is empty, a label appears in val or test but never in train, or
            (unless ``allow_shared_videos``) one video appears in two subsets.
    """
    for name in SUBSETS:
        if not (split["subset"] == name).any():
            raise DataError(f"The {name} subset is empty. Check the split settings under data.")

    train_labels = set(split.loc[split["subset"] == "train", "label"])
    for name in ("val", "test"):
        only_here = sorted(set(split.loc[split["subset"] == name, "label"]) - train_labels)
        if only_here:
            raise DataError(
                f"Label(s) {only_here} appear in {name} but not in train, so the model cannot "
                "learn them. Add videos of these classes or change the split."
            )

    if not allow_shared_videos:
        subsets_per_video = split.groupby("video")["subset"].nunique()
        shared = sorted(subsets_per_video.index[subsets_per_video > 1])
        if shared:
            raise DataError(f"Videos {shared[:5]} appear in more than one subset.")

    missing = sorted(set(class_names) - train_labels)
    if missing:
        raise DataError(f"Classes {missing} have no training images.")


def _videos_per_class(manifest: pd.DataFrame) -> dict[str, list[str]]:
    """Map each label to its sorted video ids; a video's label is its most common image label."""
    video_label = manifest.groupby("video")["label"].agg(lambda s: s.value_counts().idxmax())
    return {
        label: sorted(videos.index) for label, videos in video_label.groupby(video_label, sort=True)
    }


def _check_remaining(
    remaining: pd.DataFrame, manifest: pd.DataFrame, needed: int, what: str
) -> None:
    per_class = _videos_per_class(remaining) if not remaining.empty else {}
    for label in sorted(manifest["label"].unique()):
        count = len(per_class.get(label, []))
        if count < needed:
            raise DataError(
                f"Class '{label}' has {count} videos outside the test set, too few for {what} "
                f"(needs {needed}). Lower data.num_folds or data.test_per_class, or add videos."
            )


def _check_count_or_fraction(value: float, key: str) -> None:
    if value <= 0 or (value >= 1 and float(value) != int(value)):
        raise ConfigError(
            f"{key}={value} is out of range; use a fraction 0 < f < 1 or a whole count >= 1."
        )


def _count(value: float, total: int) -> int:
    if value < 1:
        return max(1, int(round(value * total)))
    return int(value)
