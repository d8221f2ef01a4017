"""Split schemes: whole-video test hold-out, video folds, the leaking random split, and errors."""

from __future__ import annotations

import pandas as pd
import pytest

from fishaug.data import splits
from fishaug.data.datamodule import FishDataModule
from fishaug.errors import ConfigError, DataError


def make_manifest(videos_per_class: dict[str, int], images_per_video: int = 3) -> pd.DataFrame:
    rows = [
        {"path": f"/img/{label}/{v}/{i}.png", "label": label, "video": f"{label}-v{v}"}
        for label, count in videos_per_class.items()
        for v in range(count)
        for i in range(images_per_video)
    ]
    return pd.DataFrame(rows)


def split_of(manifest: pd.DataFrame, **kwargs) -> pd.DataFrame:
    datamodule = FishDataModule(manifest, check_images=False, normalization="none", **kwargs)
    return datamodule.make_split()


def test_video_folds_share_no_video():
    manifest = make_manifest({"bream": 9, "chub": 7, "perch": 6})
    for fold in range(4):
        split = split_of(manifest, scheme="video_folds", num_folds=4, fold=fold)
        assert (split.groupby("video")["subset"].nunique() == 1).all()
        splits.check_split(split, ["bream", "chub", "perch"], allow_shared_videos=False)


def test_video_folds_cover_every_video_once():
    manifest = make_manifest({"bream": 9, "chub": 7})
    val_videos = []
    for fold in range(3):
        split = split_of(manifest, scheme="video_folds", num_folds=3, fold=fold)
        val_videos += split.loc[split["subset"] == "val", "video"].unique().tolist()
    test_videos = split.loc[split["subset"] == "test", "video"].unique().tolist()
    assert sorted(val_videos + test_videos) == sorted(manifest["video"].unique())


def test_split_is_deterministic_for_seed():
    manifest = make_manifest({"bream": 9, "chub": 7, "perch": 6})
    first = split_of(manifest, split_seed=3)
    second = split_of(manifest, split_seed=3)
    other = split_of(manifest, split_seed=4)
    pd.testing.assert_frame_equal(first, second)
    assert not first["subset"].equals(other["subset"])


def test_test_set_is_whole_videos_per_class():
    manifest = make_manifest({"bream": 10, "chub": 5})
    split = split_of(manifest, test_per_class=0.2)
    test = split[split["subset"] == "test"]
    assert test.groupby("label")["video"].nunique().to_dict() == {"bream": 2, "chub": 1}
    test_videos = set(test["video"])
    assert (split[split["video"].isin(test_videos)]["subset"] == "test").all()


def test_explicit_test_videos():
    manifest = make_manifest({"bream": 6, "chub": 6})
    split = split_of(manifest, test_videos=["bream-v0", "chub-v5"], num_folds=3)
    assert set(split.loc[split["subset"] == "test", "video"]) == {"bream-v0", "chub-v5"}


def test_unknown_test_video_is_rejected():
    manifest = make_manifest({"bream": 6, "chub": 6})
    with pytest.raises(
        ConfigError, match=r"data\.test_videos names videos not in the dataset: \['carp-v1'\]"
    ):
        split_of(manifest, test_videos=["carp-v1"])


def test_random_split_leaks_videos_into_train_and_val():
    manifest = make_manifest({"bream": 6, "chub": 6}, images_per_video=10)
    split = split_of(manifest, scheme="random_split", val_fraction=0.3)
    remaining = split[split["subset"] != "test"]
    assert (remaining.groupby("video")["subset"].nunique() > 1).any()
    val_share = (remaining["subset"] == "val").mean()
    assert val_share == pytest.approx(0.3, abs=0.02)
    assert set(split.loc[split["subset"] == "test", "video"]).isdisjoint(remaining["video"])


def test_too_few_videos_names_class_and_count():
    manifest = make_manifest({"bream": 9, "perch": 4})
    with pytest.raises(
        DataError, match=r"Class 'perch' has 4 videos, too few to hold out 1 for test and keep 4"
    ):
        split_of(manifest, num_folds=4, test_per_class=1)


def test_too_few_videos_for_folds_after_explicit_test():
    manifest = make_manifest({"bream": 9, "perch": 4})
    with pytest.raises(
        DataError,
        match=r"Class 'perch' has 3 videos outside the test set, too few for train and val \(needs 4\)",
    ):
        split_of(manifest, num_folds=4, test_videos=["perch-v0", "bream-v0"])


def test_label_only_in_test_is_rejected():
    split = make_manifest({"bream": 3, "chub": 3}).assign(subset="train")
    split.loc[split["video"] == "bream-v1", "subset"] = "val"
    split.loc[split["video"] == "chub-v2", "subset"] = "test"
    split.loc[split["video"] == "chub-v1", "subset"] = "test"
    split.loc[split["video"] == "chub-v0", "subset"] = "test"
    with pytest.raises(DataError, match=r"Label\(s\) \['chub'\] appear in test but not in train"):
        splits.check_split(split, ["bream", "chub"], allow_shared_videos=False)


def test_test_hold_out_taking_a_whole_class_is_rejected():
    manifest = make_manifest({"bream": 6, "chub": 6})
    extra = pd.DataFrame([{"path": "/img/eel.png", "label": "eel", "video": "eel-v0"}])
    manifest = pd.concat([manifest, extra], ignore_index=True)
    with pytest.raises(DataError, match=r"Class 'eel' has 0 videos outside the test set"):
        split_of(manifest, test_videos=["eel-v0", "bream-v0", "chub-v0"], num_folds=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_folds": 1}, r"data\.num_folds=1 is out of range; use 2 or more"),
        (
            {"num_folds": 4, "fold": 4},
            r"data\.fold=4 is out of range for data\.num_folds=4; use 0 to 3",
        ),
        ({"test_per_class": 0}, r"data\.test_per_class=0 is out of range"),
        ({"test_per_class": 1.5}, r"data\.test_per_class=1\.5 is out of range"),
        (
            {"scheme": "random_split", "val_fraction": 1.0},
            r"data\.val_fraction=1\.0 is out of range",
        ),
    ],
)
def test_bad_split_settings(kwargs, match):
    manifest = make_manifest({"bream": 9, "chub": 9})
    with pytest.raises(ConfigError, match=match):
        split_of(manifest, **kwargs)


def test_unknown_scheme_lists_valid_ones():
    with pytest.raises(
        ConfigError,
        match=r"data\.scheme='kfold' is not valid; use one of \['video_folds', 'random_split'\]",
    ):
        FishDataModule(make_manifest({"bream": 6, "chub": 6}), scheme="kfold")
