"""Dataset sources, manifest checks, image loading, letterbox, normalisation and the sampler."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import WeightedRandomSampler

from fishaug.data.datamodule import FishDataModule
from fishaug.data.fishcam import fishcam_source, parse_file_name
from fishaug.data.manifest import check_images, read_manifest
from fishaug.data.sampling import inverse_frequency_weights
from fishaug.data.sources import folder_source
from fishaug.data.transforms import Letterbox, channel_stats, load_rgb
from fishaug.errors import ConfigError, DataError


def test_read_manifest_resolves_relative_paths(image_dataset):
    manifest = read_manifest(image_dataset)
    assert len(manifest) == 3 * 6 * 4
    assert all(path.startswith(str(image_dataset.parent)) for path in manifest["path"])
    assert manifest["label"].nunique() == 3


def test_missing_manifest_names_path(tmp_path):
    with pytest.raises(DataError, match=r"Manifest not found: '.*nothing\.csv'"):
        read_manifest(tmp_path / "nothing.csv")


def test_empty_manifest_is_rejected(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("path,label,video\n")
    with pytest.raises(DataError, match="is empty: it has a header but no image rows"):
        read_manifest(path)


def test_manifest_without_video_column(tmp_path):
    path = tmp_path / "novideo.csv"
    path.write_text("path,label\na.png,bream\n")
    with pytest.raises(DataError, match=r"lacks the required column\(s\) \['video'\]"):
        read_manifest(path)


def test_missing_image_is_reported(image_dataset):
    manifest = read_manifest(image_dataset)
    manifest.loc[3, "path"] = "/does/not/exist.png"
    with pytest.raises(
        DataError,
        match=r"1 of 72 images are missing or unreadable: /does/not/exist\.png: not found.*data\.skip_bad_images=true",
    ):
        check_images(manifest)


def test_unreadable_image_is_skipped_when_allowed(image_dataset, caplog):
    manifest = read_manifest(image_dataset)
    broken = image_dataset.parent / "broken.png"
    broken.write_bytes(b"not a png")
    manifest.loc[0, "path"] = str(broken)
    kept = check_images(manifest, skip_bad=True)
    assert len(kept) == len(manifest) - 1
    assert "Skipping 1 of 72 missing or unreadable images" in caplog.text


def test_folder_source_from_subfolders(tmp_path):
    write_png(tmp_path / "Bream" / "clip1" / "a.png")
    write_png(tmp_path / "Bream" / "clip2" / "b.png")
    write_png(tmp_path / "chub" / "clip3" / "c.jpg")
    manifest = folder_source(str(tmp_path))
    assert sorted(manifest["video"]) == ["clip1", "clip2", "clip3"]
    assert sorted(manifest["label"].unique()) == ["Bream", "chub"]


def test_folder_source_from_pattern(tmp_path):
    write_png(tmp_path / "bream" / "vidA_f1.png")
    write_png(tmp_path / "bream" / "vidA_f2.png")
    manifest = folder_source(
        str(tmp_path), video_from="pattern", pattern=r"(?P<video>vid\w)_f(?P<frame>\d+)"
    )
    assert manifest["video"].tolist() == ["vidA", "vidA"]
    assert manifest["frame"].tolist() == ["1", "2"]


def test_folder_source_errors(tmp_path):
    write_png(tmp_path / "bream" / "loose.png")
    with pytest.raises(
        DataError, match=r"lies directly in its class folder, so it has no video sub-folder"
    ):
        folder_source(str(tmp_path))
    with pytest.raises(DataError, match=r"does not match dataset\.pattern"):
        folder_source(str(tmp_path), video_from="pattern", pattern=r"(?P<video>clip\d)")
    with pytest.raises(ConfigError, match=r"has no named group 'video'"):
        folder_source(str(tmp_path), video_from="pattern", pattern=r"(\d+)")
    with pytest.raises(ConfigError, match=r"dataset\.video_from='name' is not valid"):
        folder_source(str(tmp_path), video_from="name")
    with pytest.raises(DataError, match=r"dataset\.root='.*missing' does not exist"):
        folder_source(str(tmp_path / "missing"))


def test_parse_fishcam_file_name():
    parsed = parse_file_name("20151023_161022_6BBE_ACCC8E2F8AB8_nofish3_frame16.png")
    assert parsed == {
        "video": "20151023_161022_6BBE_ACCC8E2F8AB8",
        "camera": "ACCC8E2F8AB8",
        "track": "nofish3",
        "frame": 16,
    }
    with pytest.raises(DataError, match="is not a FishCam-AT file name"):
        parse_file_name("fish.png")


def test_fishcam_missing_without_download(tmp_path):
    with pytest.raises(
        DataError, match=r"No FishCam-AT sample at dataset\.root=.*set dataset\.download=true"
    ):
        fishcam_source(str(tmp_path))


def test_fishcam_download_failure_is_clear(tmp_path):
    url = (tmp_path / "nothing.zip").as_uri()
    with pytest.raises(DataError, match=r"Could not download the FishCam-AT sample from file://"):
        fishcam_source(str(tmp_path / "fishcam"), download=True, url=url)


def test_fishcam_sample(fishcam_root):
    manifest = fishcam_source(str(fishcam_root), min_images=1000)
    assert len(manifest) == 1053
    assert manifest["label"].nunique() == 7
    assert manifest["video"].nunique() == 104
    assert manifest["camera"].nunique() == 5


def test_letterbox_keeps_aspect_ratio():
    image = Image.new("RGB", (200, 50), (255, 255, 255))
    boxed = np.asarray(Letterbox(64)(image))
    assert boxed.shape == (64, 64, 3)
    rows = np.flatnonzero(boxed[:, 32, 0] > 128)
    assert len(rows) == 16  # 50 * 64 / 200
    assert boxed[0, 0].tolist() == [0, 0, 0]
    assert (boxed[rows[0] : rows[-1] + 1, :, 0] > 128).all()


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "I;16", "LA", "CMYK"])
def test_load_rgb_converts_modes(tmp_path, mode):
    path = tmp_path / f"image_{mode.replace(';', '')}.png"
    image = Image.new("RGB", (10, 6), (120, 60, 30)).convert(mode)
    image.save(path.with_suffix(".tiff") if mode == "CMYK" else path)
    loaded = load_rgb(str(path.with_suffix(".tiff") if mode == "CMYK" else path))
    assert loaded.mode == "RGB"
    assert loaded.size == (10, 6)


def test_normalisation_uses_training_images_only(image_dataset, tmp_path):
    manifest = read_manifest(image_dataset)
    datamodule = FishDataModule(
        manifest, num_folds=3, test_per_class=1, image_size=16, cache_dir=str(tmp_path / "cache")
    )
    datamodule.setup()
    train_paths = datamodule.subset_frame("train")["path"].tolist()
    all_paths = manifest["path"].tolist()
    assert datamodule.mean == pytest.approx(channel_stats(train_paths, 16)[0])
    assert datamodule.mean != pytest.approx(channel_stats(all_paths, 16)[0], abs=1e-6)
    assert len(list((tmp_path / "cache").glob("stats_*.json"))) == 1


def test_inverse_frequency_sampler_balances_classes():
    labels = [0] * 90 + [1] * 9 + [2] * 1
    weights = inverse_frequency_weights(labels)
    sampler = WeightedRandomSampler(weights, 30000, generator=torch.Generator().manual_seed(0))
    counts = Counter(labels[i] for i in sampler)
    for label in (0, 1, 2):
        assert counts[label] / 30000 == pytest.approx(1 / 3, abs=0.02)


def test_loader_batches_have_image_size(image_dataset):
    datamodule = FishDataModule(
        read_manifest(image_dataset), num_folds=3, test_per_class=1, image_size=24, batch_size=5
    )
    datamodule.setup()
    images, targets, rows = next(iter(datamodule.train_dataloader()))
    assert images.shape == (5, 3, 24, 24)
    assert images.dtype == torch.float32
    assert targets.dtype == torch.int64
    split_rows = datamodule.split.loc[rows.numpy()]
    assert (split_rows["subset"] == "train").all()


def write_png(path, size=(12, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 200, 30)).save(path)
    return path


def test_split_file_round_trip(image_dataset, tmp_path):
    datamodule = FishDataModule(
        read_manifest(image_dataset), num_folds=3, test_per_class=1, image_size=16
    )
    datamodule.setup()
    datamodule.save_split(tmp_path / "split.csv")
    saved = pd.read_csv(tmp_path / "split.csv")
    assert list(saved.columns[:4]) == ["path", "label", "video", "subset"]
    reused = FishDataModule(read_manifest(image_dataset), split=saved, image_size=16)
    reused.setup()
    assert reused.split["subset"].tolist() == datamodule.split["subset"].tolist()
