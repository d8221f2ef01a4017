"""The Faster AutoAugment search end to end: python search.py's work on small data, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import compose_config, write_image_dataset
from PIL import Image

import fishaug.data.datamodule as datamodule_module
from fishaug.augment.faster_aa.policy_file import load_policy
from fishaug.augment.faster_aa.search import search
from fishaug.errors import ConfigError
from fishaug.training import train

# A search small enough for a CPU test: 32 px, batches of 8 (4 augmented in 2 chunks).
SMALL_SEARCH = [
    "dataset=manifest",
    "data.test_per_class=1",
    "data.num_folds=3",
    "data.image_size=32",
    "data.batch_size=8",
    "data.num_workers=0",
    "search.num_sub_policies=3",
    "search.num_stages=2",
    "search.num_chunks=2",
    "search.export_epochs=[1]",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=2",
    "+trainer.limit_train_batches=1",
    "trainer.enable_progress_bar=false",
]


def search_config(manifest: Path, output_dir: Path, overrides: list[str] = ()):
    return compose_config(
        "search", [*SMALL_SEARCH, f"dataset.path={manifest}", *overrides], output_dir
    )


def test_search_writes_policies_that_train(image_dataset, tmp_path, monkeypatch, train_config):
    loaded_paths: list[str] = []
    original_load = datamodule_module.load_rgb

    def recording_load(path):
        loaded_paths.append(path)
        return original_load(path)

    monkeypatch.setattr(datamodule_module, "load_rgb", recording_load)
    run = tmp_path / "search"
    metrics = search(search_config(image_dataset, run))

    for name in (
        "policy.json",
        "policy_summary.txt",
        "policies/epoch_001.json",
        "policies/epoch_001_summary.txt",
        "search_losses.csv",
        "search_losses.png",
        "metrics.json",
        "split.csv",
    ):
        assert (run / name).is_file(), name
    assert load_policy(run / "policy.json") is not None
    assert load_policy(run / "policies/epoch_001.json") is not None

    saved = json.loads((run / "metrics.json").read_text())
    assert saved["search/epochs"] == 2
    assert saved["search/images"] == 2 * 8
    assert saved["search/images_per_s"] > 0
    assert metrics["policy"] == str(run / "policy.json")
    losses = pd.read_csv(run / "search_losses.csv")
    assert list(losses["epoch"]) == [1, 2]
    assert np.isfinite(losses[["task_loss", "critic_loss", "policy_loss"]].to_numpy()).all()
    summary = (run / "policy_summary.txt").read_text()
    assert "after epoch 2 of 2" in summary
    assert "Operations by how often a stage applies them" in summary

    # The search reads training images only: no val or test video is ever loaded.
    split = pd.read_csv(run / "split.csv")
    root = image_dataset.parent
    train_paths = {str(root / p) for p in split.loc[split["subset"] == "train", "path"]}
    assert loaded_paths
    assert set(loaded_paths) <= train_paths

    cfg = train_config(
        [
            "dataset=manifest",
            f"dataset.path={image_dataset}",
            "data.test_per_class=1",
            "data.num_folds=3",
            "aug=faster_aa",
            f"aug.policy={run / 'policy.json'}",
            "debug=fdr",
        ],
        output_dir=tmp_path / "train",
    )
    assert "test/f1_macro" in train(cfg)


def test_search_on_grayscale_images(tmp_path):
    manifest = write_image_dataset(
        tmp_path / "images", classes=2, videos_per_class=5, images_per_video=4
    )
    for path in (tmp_path / "images").rglob("*.png"):
        Image.open(path).convert("L").save(path)
    run = tmp_path / "search"
    search(search_config(manifest, run, ["debug=fdr", "data.num_folds=2"]))
    assert load_policy(run / "policy.json") is not None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["data.batch_size=6", "search.num_chunks=4"],
            r"data.batch_size=6 is too small for search.num_chunks=4",
        ),
        (["search.num_chunks=0"], r"search.num_chunks=0 is out of range"),
        (["search.temperature=0"], r"search.temperature=0 is out of range"),
        (["search.operations=[rotate,blur]"], r"unknown \['blur'\]"),
        (["trainer.precision=16-mixed"], r"trainer.precision=16-mixed is not supported"),
    ],
)
def test_bad_search_settings(image_dataset, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        search(search_config(image_dataset, tmp_path / "search", overrides))


def test_too_few_training_images_for_a_batch(image_dataset, tmp_path):
    cfg = search_config(
        image_dataset, tmp_path / "search", ["data.batch_size=64", "search.num_chunks=2"]
    )
    with pytest.raises(
        ConfigError, match=r"The training split has \d+ images, fewer than one batch"
    ):
        search(cfg)
