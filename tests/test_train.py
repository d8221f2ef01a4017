"""End-to-end training runs with the real Trainer on small data."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fishaug.training import train


def test_train_writes_run_folder(train_config, image_dataset, tmp_path):
    cfg = train_config(
        [
            "dataset=manifest",
            f"dataset.path={image_dataset}",
            "data.test_per_class=1",
            "data.num_folds=3",
            "trainer.max_epochs=2",
        ]
    )
    metrics = train(cfg)

    run = tmp_path / "run"
    for name in (
        "split.csv",
        "metrics.json",
        "predictions_val.csv",
        "predictions_test.csv",
        "confusion_val.csv",
        "confusion_val.png",
        "confusion_test.csv",
        "confusion_test.png",
    ):
        assert (run / name).is_file(), name
    assert list((run / "checkpoints").glob("*.ckpt"))
    saved = json.loads((run / "metrics.json").read_text())
    for key in ("val/f1_macro", "test/f1_macro", "test/track_acc_maxprob", "time/fit_s"):
        assert key in saved
    assert saved["test/f1_macro"] == pytest.approx(metrics["test/f1_macro"])

    predictions = pd.read_csv(run / "predictions_test.csv")
    assert {"path", "label", "pred", "prob_species0"} <= set(predictions.columns)
    split = pd.read_csv(run / "split.csv")
    assert set(split["subset"]) == {"train", "val", "test"}
    assert len(predictions) == (split["subset"] == "test").sum()


def small_run(train_config, manifest, output_dir, extra=()):
    overrides = [
        "dataset=manifest",
        f"dataset.path={manifest}",
        "data.test_per_class=1",
        "data.num_folds=3",
        "trainer.max_epochs=2",
        *extra,
    ]
    return train(train_config(overrides, output_dir=output_dir))


def test_same_seed_repeats_on_cpu(train_config, image_dataset, tmp_path):
    first = small_run(train_config, image_dataset, tmp_path / "a", ["aug=randaugment"])
    second = small_run(train_config, image_dataset, tmp_path / "b", ["aug=randaugment"])
    for key, value in first.items():
        if key.startswith(("val/", "test/")):
            assert second[key] == value, key
    split_a = pd.read_csv(tmp_path / "a" / "split.csv")
    split_b = pd.read_csv(tmp_path / "b" / "split.csv")
    assert split_a["subset"].tolist() == split_b["subset"].tolist()


@pytest.mark.fishcam
def test_short_train_on_fishcam_slice(train_config, fishcam_root, tmp_path):
    from fishaug.data.fishcam import fishcam_source

    manifest = fishcam_source(str(fishcam_root))
    keep = []
    for label in ("bream", "burbot", "rainbowtrout"):
        videos = sorted(manifest.loc[manifest["label"] == label, "video"].unique())[:6]
        keep += videos
    path = tmp_path / "slice.csv"
    manifest[manifest["video"].isin(keep)].to_csv(path, index=False)

    metrics = small_run(
        train_config, path, tmp_path / "run", ["aug=trivialaugment", "data.image_size=48"]
    )
    assert 0.0 <= metrics["test/f1_macro"] <= 1.0
    predictions = pd.read_csv(tmp_path / "run" / "predictions_test.csv")
    assert set(predictions["label"]) == {"bream", "burbot", "rainbowtrout"}
    assert "track" in predictions.columns
    assert 0.0 <= metrics["test/track_acc_vote"] <= 1.0


def test_eval_reuses_checkpoint_and_split(train_config, image_dataset, tmp_path):
    from conftest import compose_config

    from fishaug.evaluate import evaluate

    metrics = small_run(train_config, image_dataset, tmp_path / "run")
    run = tmp_path / "run"
    cfg = compose_config(
        "eval",
        [
            "dataset=manifest",
            f"dataset.path={image_dataset}",
            "data.image_size=32",
            "data.num_workers=0",
            "trainer.accelerator=cpu",
            f"ckpt_path={metrics['best_checkpoint']}",
            f"split_file={run / 'split.csv'}",
        ],
        tmp_path / "eval",
    )
    evaluated = evaluate(cfg)
    assert evaluated["test/f1_macro"] == pytest.approx(metrics["test/f1_macro"])
    assert (tmp_path / "eval" / "predictions_test.csv").is_file()


def test_eval_rejects_missing_checkpoint(tmp_path):
    from conftest import compose_config

    from fishaug.errors import ConfigError
    from fishaug.evaluate import evaluate

    cfg = compose_config("eval", ["ckpt_path=/nowhere/model.ckpt"], tmp_path / "eval")
    with pytest.raises(ConfigError, match=r"ckpt_path='/nowhere/model\.ckpt' does not exist"):
        evaluate(cfg)
