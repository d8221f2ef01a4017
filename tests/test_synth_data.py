"""Synthetic-image steps that need no diffusion model: captions, the fine-tuning set, provenance,
and the ``aug=synthetic`` augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import compose_config
from PIL import Image

from fishaug.augment import build_augmentation
from fishaug.errors import ConfigError, DataError
from fishaug.synth.prepare import (
    METADATA_FILE,
    build_finetune_set,
    fish_box,
    read_finetune_set,
    run_prepare,
    select_images,
    square_crop,
)
from fishaug.synth.provenance import read_provenance, write_provenance
from fishaug.synth.sets import write_set_manifest
from fishaug.synth.species import SPECIES, class_prompts, species_key

TEMPLATE = "a photo of {token} {common_name} ({latin_name})"
CLASS_TEMPLATE = "a photo of {common_name} ({latin_name})"


def test_species_table_covers_study_and_fishcam():
    study = [
        "eel",
        "nase",
        "perch",
        "roach",
        "barbel",
        "bleak",
        "bream",
        "carp",
        "wels catfish",
        "chub",
    ]
    fishcam = ["bream", "browntrout", "burbot", "chub", "nase", "perch", "rainbowtrout"]
    for label in study + fishcam:
        assert species_key(label) in SPECIES, label
    tokens = [entry.token for entry in SPECIES.values()]
    assert len(set(tokens)) == len(tokens)


def test_class_prompts_fill_templates():
    prompts = class_prompts(["perch", "Wels_Catfish"], TEMPLATE, CLASS_TEMPLATE)

    assert prompts["perch"].prefix == "a photo of vtz European perch (Perca fluviatilis)"
    assert prompts["perch"].class_prompt == "a photo of European perch (Perca fluviatilis)"
    assert prompts["Wels_Catfish"].latin_name == "Silurus glanis"


def test_class_prompts_override_adds_species():
    overrides = {
        "grayling": {"token": "zqg", "common_name": "grayling", "latin_name": "Thymallus thymallus"}
    }
    prompts = class_prompts(["grayling", "perch"], TEMPLATE, CLASS_TEMPLATE, overrides)
    assert prompts["grayling"].prefix == "a photo of zqg grayling (Thymallus thymallus)"

    renamed = class_prompts(["perch"], TEMPLATE, CLASS_TEMPLATE, {"perch": {"token": "prc"}})
    assert renamed["perch"].prefix.startswith("a photo of prc European perch")


@pytest.mark.parametrize(
    ("labels", "template", "overrides", "message"),
    [
        (["grayling"], TEMPLATE, None, r"no entry for class\(es\) \['grayling'\]"),
        (["perch"], "{token} {colour}", None, r"unknown field\(s\) \['colour'\]"),
        (["perch", "bream"], TEMPLATE, {"bream": {"token": "vtz"}}, "share an identifier token"),
        (
            ["grayling"],
            TEMPLATE,
            {"grayling": {"token": "zqg"}},
            r"lacks \['common_name', 'latin_name'\]",
        ),
        (["perch"], TEMPLATE, {"perch": {"colour": "green"}}, r"unknown field\(s\) \['colour'\]"),
    ],
)
def test_class_prompts_reject_bad_input(labels, template, overrides, message):
    with pytest.raises(ConfigError, match=message):
        class_prompts(labels, template, CLASS_TEMPLATE, overrides)


def test_square_crop_centres_box_and_pads_black():
    pixels = np.full((40, 60, 3), 200, dtype=np.uint8)
    crop = square_crop(pixels, (50.0, 10.0, 10.0, 20.0), margin=0.5, pad_mode="black")

    assert crop.shape == (40, 40, 3)
    # The square (side 40, centred at x=55) reaches 15 pixels past the right edge.
    assert (crop[:, -15:] == 0).all()
    assert (crop[:, :25] == 200).all()


def test_square_crop_without_box_pads_to_square():
    pixels = np.full((10, 30, 3), 100, dtype=np.uint8)
    crop = square_crop(pixels, (0.0, 0.0, 30.0, 10.0), margin=0.0, pad_mode="edge")
    assert crop.shape == (30, 30, 3)
    assert (crop == 100).all()


def test_fish_box_modes():
    row = {"path": "crop.png", "x": 300.0, "y": 120.0, "w": 60.0, "h": 30.0}
    assert fish_box(row, 80, 40, boxes="auto") is None
    assert fish_box({**row, "x": 10.0, "y": 5.0}, 80, 40, boxes="auto") == (10.0, 5.0, 60.0, 30.0)
    assert fish_box({**row, "x": 10.0, "y": 5.0}, 80, 40, boxes="ignore") is None
    with pytest.raises(DataError, match="does not lie inside the 80 x 40 image"):
        fish_box(row, 80, 40, boxes="image")
    with pytest.raises(DataError, match="has no box"):
        fish_box({"path": "crop.png"}, 80, 40, boxes="image")


def test_select_images_caps_videos_and_skips_small():
    scored = pd.DataFrame(
        {
            "path": [f"{i}.png" for i in range(6)],
            "label": ["a"] * 6,
            "video": ["v1", "v1", "v1", "v2", "v2", "v3"],
            "quality": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
            "side": [50, 50, 50, 50, 50, 5],
        }
    )
    chosen = select_images(scored, per_class=4, max_per_video=2, min_side=10)
    assert chosen["path"].tolist() == ["0.png", "1.png", "3.png", "4.png"]

    with pytest.raises(DataError, match="prepare.min_side=100"):
        select_images(scored, per_class=4, max_per_video=None, min_side=100)


def _rows_with_boxes(root: Path) -> pd.DataFrame:
    """Two classes, two videos each, three 80 x 60 frames with a bright fish box."""
    rows = []
    rng = np.random.default_rng(0)
    for label in ("perch", "bream"):
        for v in range(2):
            for i in range(3):
                pixels = rng.integers(0, 40, size=(60, 80, 3), dtype=np.uint8)
                pixels[20:40, 10 + i * 10 : 40 + i * 10] = 180 + 20 * v
                path = root / f"{label}_{v}_{i}.png"
                Image.fromarray(pixels).save(path)
                rows.append(
                    {
                        "path": str(path),
                        "label": label,
                        "video": f"{label}-v{v}",
                        "x": 10 + i * 10,
                        "y": 20,
                        "w": 30,
                        "h": 20,
                    }
                )
    return pd.DataFrame(rows)


def test_build_finetune_set_writes_metadata(tmp_path):
    rows = _rows_with_boxes(tmp_path)
    for path in rows.loc[rows["label"] == "perch", "path"]:
        Path(path).with_suffix(".txt").write_text("side view, dark water\n")
    prompts = class_prompts(rows["label"], TEMPLATE, CLASS_TEMPLATE)

    metadata = build_finetune_set(
        rows, tmp_path / "set", prompts, resolution=32, per_class=2, provenance={"note": "test"}
    )

    assert len(metadata) == 4
    lines = (tmp_path / "set" / METADATA_FILE).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert {"file_name", "text", "label", "video"} <= set(records[0])
    for record in records:
        image = Image.open(tmp_path / "set" / record["file_name"])
        assert image.size == (32, 32)
        assert record["text"].startswith(prompts[record["label"]].prefix)
        if record["label"] == "perch":
            assert record["text"] == f"{prompts['perch'].prefix}, side view, dark water"
        else:
            assert record["text"] == prompts["bream"].prefix
    provenance = read_provenance(tmp_path / "set")
    assert provenance["kind"] == "finetune_set"
    assert set(provenance["videos"]) == set(metadata["video"])
    assert json.loads((tmp_path / "set" / "prompts.json").read_text())["perch"]["token"] == "vtz"
    assert len(read_finetune_set(tmp_path / "set")) == 4


def test_build_finetune_set_refuses_existing_set(tmp_path):
    rows = _rows_with_boxes(tmp_path)
    prompts = class_prompts(rows["label"], TEMPLATE, CLASS_TEMPLATE)
    build_finetune_set(rows, tmp_path / "set", prompts, resolution=32, per_class=1)

    with pytest.raises(
        ConfigError, match=r"already contains an output\. Set prepare\.overwrite=true"
    ):
        build_finetune_set(rows, tmp_path / "set", prompts, resolution=32, per_class=1)
    build_finetune_set(rows, tmp_path / "set", prompts, resolution=32, per_class=2, overwrite=True)
    assert len(read_finetune_set(tmp_path / "set")) == 4

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="contains no earlier output"):
        build_finetune_set(
            rows, tmp_path / "other", prompts, resolution=32, per_class=1, overwrite=True
        )


def test_prepare_step_uses_training_split_only(tmp_path, image_dataset):
    overrides = [
        "step=prepare",
        "dataset=manifest",
        f"dataset.path={image_dataset}",
        "data.test_per_class=1",
        "data.num_folds=3",
        "prepare.per_class=3",
        "prepare.resolution=32",
        "+species.species0={token: zqa, common_name: red fish, latin_name: Rubra rubra}",
        "+species.species1={token: zqb, common_name: green fish, latin_name: Viridis viridis}",
        "+species.species2={token: zqc, common_name: blue fish, latin_name: Caerulea caerulea}",
    ]
    cfg = compose_config("synth", overrides, tmp_path / "run")

    metadata = run_prepare(cfg)

    provenance = read_provenance(cfg.prepare.output_dir)
    held_out = set(provenance["details"]["val_videos"]) | set(provenance["details"]["test_videos"])
    assert held_out
    assert not set(metadata["video"]) & held_out
    assert metadata.groupby("label").size().tolist() == [3, 3, 3]
    assert "a photo of zqa red fish (Rubra rubra)" in set(metadata["text"])


def _write_set(
    root: Path, videos: list[str], labels=("species0", "species1"), per_class: int = 4
) -> Path:
    """A hand-made synthetic set: coloured PNGs, manifest.csv and provenance.json."""
    root.mkdir(parents=True)
    rows = []
    for label in labels:
        for seed in range(per_class):
            path = root / f"{label}_{seed}.png"
            Image.new("RGB", (24, 24), (40 * seed, 100, 150)).save(path)
            rows.append(
                {
                    "path": str(path),
                    "label": label,
                    "video": "set1",
                    "source": "set1",
                    "model": "lora",
                    "seed": seed,
                    "prompt": f"a {label}",
                }
            )
    write_set_manifest(root, pd.DataFrame(rows))
    write_provenance(root, "generated", videos=videos)
    return root


def _split(train_videos=("a", "b"), val_videos=("c",), test_videos=("d",)) -> pd.DataFrame:
    rows = []
    for subset, videos in (("train", train_videos), ("val", val_videos), ("test", test_videos)):
        for video in videos:
            for label in ("species0", "species1"):
                rows.append(
                    {
                        "path": f"{video}.png",
                        "label": label,
                        "video": f"{video}-{label}",
                        "subset": subset,
                    }
                )
    return pd.DataFrame(rows)


def test_synthetic_adds_rows_within_ratio_and_cap(tmp_path):
    folder = _write_set(tmp_path / "set", videos=["a-species0"])
    split = _split()

    unlimited = build_augmentation({"name": "synthetic", "sets": [str(folder)]}, seed=0)
    assert len(unlimited.extra_train_rows(split)) == 8

    # Two real training images per class: ratio 1.5 allows 3, the cap 2.
    limited = build_augmentation(
        {"name": "synthetic", "sets": [str(folder)], "ratio": 1.5, "max_per_class": 2}, seed=0
    )
    extra = limited.extra_train_rows(split)
    assert extra.groupby("label").size().tolist() == [2, 2]
    assert {"source", "model", "seed", "prompt"} <= set(extra.columns)
    assert all(Path(p).is_absolute() for p in extra["path"])


def test_synthetic_prefers_high_scores(tmp_path):
    folder = _write_set(tmp_path / "set", videos=[], labels=("species0",))
    manifest = pd.read_csv(folder / "manifest.csv")
    manifest.assign(score=[0.1, 0.9, 0.5, 0.7]).to_csv(folder / "manifest.csv", index=False)
    augment = build_augmentation(
        {"name": "synthetic", "sets": [str(folder)], "max_per_class": 2}, seed=0
    )
    extra = augment.extra_train_rows(_split())
    assert extra["seed"].tolist() == [1, 3]


def test_synthetic_rejects_held_out_videos(tmp_path):
    folder = _write_set(tmp_path / "set", videos=["a-species0", "c-species1"])
    augment = build_augmentation({"name": "synthetic", "sets": [str(folder)]}, seed=0)
    with pytest.raises(DataError, match=r"holds out for validation or testing: c-species1 \(val\)"):
        augment.extra_train_rows(_split())


def test_synthetic_rejects_unknown_labels(tmp_path):
    folder = _write_set(tmp_path / "set", videos=[], labels=("species0", "eel"))
    augment = build_augmentation({"name": "synthetic", "sets": [str(folder)]}, seed=0)
    with pytest.raises(DataError, match=r"label\(s\) \['eel'\] that are not classes"):
        augment.extra_train_rows(_split())


def test_synthetic_inner_augmentation_runs(tmp_path):
    folder = _write_set(tmp_path / "set", videos=[])
    augment = build_augmentation(
        {
            "name": "synthetic",
            "sets": [str(folder)],
            "inner": {"name": "randaugment", "n": 2, "m": 9},
        },
        seed=0,
    )
    image = Image.new("RGB", (32, 32), (120, 60, 30))
    assert augment(image).size == (32, 32)
    assert "RandAugment" in repr(augment)


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        ({"sets": []}, ConfigError, "aug.sets is empty"),
        ({"ratio": -1}, ConfigError, r"aug.ratio=-1 is out of range"),
        ({"max_per_class": 2.5}, ConfigError, r"aug.max_per_class=2.5 is out of range"),
        (
            {"inner": {"name": "randaugment", "n": 20}},
            ConfigError,
            r"aug.inner: aug.n=20 is out of range",
        ),
        ({"inner": "synthetic"}, ConfigError, "aug.inner=synthetic is not valid"),
        ({"sets": ["/nonexistent/set"]}, DataError, "does not exist"),
    ],
)
def test_synthetic_rejects_bad_config(tmp_path, params, error, message):
    folder = _write_set(tmp_path / "set", videos=[])
    with pytest.raises(error, match=message):
        build_augmentation({"name": "synthetic", "sets": [str(folder)], **params}, seed=0)


def test_synthetic_needs_provenance(tmp_path):
    folder = _write_set(tmp_path / "set", videos=[])
    (folder / "provenance.json").unlink()
    with pytest.raises(DataError, match="No provenance.json"):
        build_augmentation({"name": "synthetic", "sets": [str(folder)]}, seed=0)
