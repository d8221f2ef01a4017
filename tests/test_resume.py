"""Interrupted runs resume from their last checkpoint; finished ones are not trained again."""

from __future__ import annotations

import json

import lightning as L
import pytest

from fishaug import training

OVERRIDES = ["data.test_per_class=1", "data.num_folds=3", "trainer.max_epochs=4"]


class Interrupt(L.Callback):
    """Fail at the end of a training epoch, after that epoch's checkpoint was written."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated interruption")


def run(train_config, manifest, output_dir, log_dir):
    overrides = ["dataset=manifest", f"dataset.path={manifest}", "aug=randaugment", *OVERRIDES]
    return training.train(train_config(overrides, output_dir=output_dir, log_dir=log_dir))


def test_interrupted_run_resumes_to_same_result(train_config, image_dataset, tmp_path, monkeypatch):
    reference = run(train_config, image_dataset, tmp_path / "ref" / "run", tmp_path / "ref")

    build_trainer = training.build_trainer

    def build_interrupted_trainer(cfg):
        trainer = build_trainer(cfg)
        trainer.callbacks.append(Interrupt(epoch=1))
        return trainer

    logs = tmp_path / "logs"
    monkeypatch.setattr(training, "build_trainer", build_interrupted_trainer)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        run(train_config, image_dataset, logs / "first", logs)
    assert (logs / "first" / "checkpoints" / "last.ckpt").is_file()
    assert not (logs / "first" / "metrics.json").exists()

    monkeypatch.setattr(training, "build_trainer", build_trainer)
    resumed = run(train_config, image_dataset, logs / "second", logs)
    assert (logs / "first" / "resumed_in.txt").read_text().strip() == str(logs / "second")
    for key, value in reference.items():
        if key.startswith(("val/", "test/")):
            assert resumed[key] == pytest.approx(value, abs=1e-6), key


def test_finished_run_is_reused(train_config, image_dataset, tmp_path):
    logs = tmp_path / "logs"
    first = run(train_config, image_dataset, logs / "first", logs)
    again = run(train_config, image_dataset, logs / "again", logs)
    assert again == json.loads((logs / "first" / "metrics.json").read_text())
    assert again["test/f1_macro"] == first["test/f1_macro"]
    assert (logs / "again" / "reused_from.txt").read_text().strip() == str(logs / "first")
    assert (logs / "again" / "predictions_test.csv").is_file()


def test_skip_completed_false_trains_again(train_config, image_dataset, tmp_path):
    logs = tmp_path / "logs"
    run(train_config, image_dataset, logs / "first", logs)
    overrides = ["dataset=manifest", f"dataset.path={image_dataset}", *OVERRIDES]
    cfg = train_config(
        overrides + ["skip_completed=false"], output_dir=logs / "again", log_dir=logs
    )
    training.train(cfg)
    assert not (logs / "again" / "reused_from.txt").exists()
    assert list((logs / "again" / "checkpoints").glob("*.ckpt"))
