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
