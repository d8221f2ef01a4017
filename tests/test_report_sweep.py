"""A real two-job multirun: one job fails after its W&B run started, the other completes, and
the sweep still gets its report and one finished W&B run per job."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO_ROOT
from omegaconf import OmegaConf
from test_wandb import offline_runs, read_finished_run

from fishaug.report.hydra_callbacks import BASIC_SWEEPER, expected_jobs


def test_expected_jobs_per_sweeper():
    basic = OmegaConf.create({"hydra": {"sweeper": {"_target_": BASIC_SWEEPER}}})
    grid = ["dataset=fishcam", "aug.n=1,2", "aug.m=5,9", "data.fold=0,1"]
    optuna = OmegaConf.create({"hydra": {"sweeper": {"_target_": "optuna", "n_trials": 20}}})
    unknown = OmegaConf.create({"hydra": {"sweeper": {"_target_": "custom"}}})

    assert expected_jobs(basic, grid, {}) == 8
    assert expected_jobs(basic, ["model=resnet18"], {"model": "a,b", "seed": "0,1,2"}) == 3
    assert expected_jobs(optuna, [], {}) == 20
    assert expected_jobs(unknown, grid, {}) is None


def test_failed_job_sweep_gets_report_and_runs(image_dataset, tmp_path):
    pytest.importorskip("wandb")
    sweep = tmp_path / "sweep"
    environment = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb_config"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb_cache"),
        "WANDB_DATA_DIR": str(tmp_path / "wandb_data"),
    }
    command = [
        sys.executable,
        "train.py",
        "-m",
        "dataset=manifest",
        f"dataset.path={image_dataset}",
        "data.test_per_class=1",
        "data.num_folds=3",
        "data.image_size=32",
        "data.num_workers=0",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "logger=wandb",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"hydra.sweep.dir={sweep}",
        # A negative learning rate makes Adam raise when fitting starts, after the W&B run began.
        "model.optimizer.lr=-1,0.001",
    ]
    finished = subprocess.run(
        command, cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=600
    )

    assert finished.returncode != 0, "Hydra reports the failed job with a non-zero exit"
    jobs = pd.read_csv(sweep / "jobs.csv")
    assert list(jobs["status"]) == ["failed", "completed"]

    report = sweep / "report"
    assert (report / "report.html").is_file(), finished.stderr[-3000:]
    failed = pd.read_csv(report / "failed.csv")
    assert len(failed) == 1
    assert "Invalid learning rate" in failed["reason"].iloc[0]
    summary = pd.read_csv(report / "summary.csv")
    assert list(summary["configuration"]) == ["none lr=0.001"]
    assert "none lr=-1" in (report / "report.html").read_text()

    failed_run = read_finished_run(offline_runs(sweep / "0")[0])
    completed_run = read_finished_run(offline_runs(sweep / "1")[0])
    assert failed_run["exit_code"] == 1
    assert failed_run["name"] == "none optimizer.lr=-1"
    assert completed_run["exit_code"] == 0
    assert completed_run["name"] == "none optimizer.lr=0.001"
    assert completed_run["group"] == "sweep sweep"
    assert completed_run["summary"]["test/f1_macro"] >= 0.0
    assert completed_run["config"]["model.optimizer.lr"] == pytest.approx(0.001)
