"""Multiruns through Hydra launchers and sweepers, and DDP, writing the usual run folders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO_ROOT, compose_config
from hydra.utils import instantiate

TINY_RUN = [
    "dataset=manifest",
    "data.test_per_class=1",
    "data.num_folds=3",
    "data.image_size=32",
    "debug=few_batches",
    "trainer.enable_progress_bar=false",
    "skip_completed=false",
    "resume=false",
    "hydra.callbacks.sweep_summary.enabled=false",
]


def run_train(args: list[str], tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "train.py",
        *args,
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.log_dir={tmp_path / 'logs'}",
    ]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def only_sweep(tmp_path: Path) -> Path:
    """Return the one sweep folder below tmp_path/logs, where the default sweep dir puts it."""
    sweeps = list((tmp_path / "logs" / "train" / "multiruns").iterdir())
    assert len(sweeps) == 1, sweeps
    return sweeps[0]


def check_job_folders(sweep: Path, jobs: int, stderr: str) -> pd.DataFrame:
    """Check the run-folder layout of every job and return the sweep's jobs.csv."""
    # Hydra turns an exception in a callback into a warning. The job-status callback runs in
    # each job's process and must resolve the default sweep folder there.
    assert "on_job_end raised" not in stderr
    for number in range(jobs):
        folder = sweep / str(number)
        assert (folder / "metrics.json").is_file(), folder
        assert "test/f1_macro" in json.loads((folder / "metrics.json").read_text())
        assert (folder / ".hydra" / "config.yaml").is_file(), folder
        assert (folder / "split.csv").is_file(), folder
        status = json.loads((folder / "job_status.json").read_text())
        assert status["status"] == "completed", status
        assert status["job"] == number
    table = pd.read_csv(sweep / "jobs.csv")
    assert table["job"].tolist() == list(range(jobs))
    assert set(table["status"]) == {"completed"}
    return table


def test_joblib_launcher_two_jobs(image_dataset, tmp_path):
    result = run_train(
        [
            "-m",
            *TINY_RUN,
            f"dataset.path={image_dataset}",
            "model=resnet18",
            "data.fold=0,1",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout

    sweep = only_sweep(tmp_path)
    table = check_job_folders(sweep, 2, result.stderr)
    assert table["overrides"].str.contains("data.fold=1").sum() == 1
    # Each job ran in a worker process of its own.
    logs = [(sweep / str(n) / "train.log").read_text() for n in (0, 1)]
    assert all("Fit took" in log for log in logs)


@pytest.mark.slow
def test_submitit_local_launcher_two_jobs(image_dataset, tmp_path):
    result = run_train(
        [
            "-m",
            *TINY_RUN,
            f"dataset.path={image_dataset}",
            "model=resnet18",
            "data.fold=0,1",
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=10",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    sweep = only_sweep(tmp_path)
    # submitit keeps each job's pickled call and its stdout/stderr beside the job folders.
    job_errors = [p.read_text() for p in sorted(sweep.glob(".submitit/*/*_log.err"))]
    assert len(job_errors) == 2
    check_job_folders(sweep, 2, result.stderr + "".join(job_errors))


def test_slurm_launcher_config_composes(tmp_path):
    cfg = compose_config(
        "train", ["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], tmp_path
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "gpu"
    assert launcher.gpus_per_node == 1
    assert launcher.timeout_min == 240
    # The launcher object builds without SLURM; only submitting needs sbatch.
    assert type(instantiate(launcher)).__name__ == "SlurmLauncher"


@pytest.mark.slow
def test_optuna_sweeper_runs_trials(image_dataset, tmp_path):
    result = run_train(
        [
            "-m",
            *TINY_RUN,
            f"dataset.path={image_dataset}",
            "hydra/sweeper=tpe",
            "hydra.sweeper.n_trials=2",
            "aug=randaugment",
            "aug.n=int(interval(1,3))",
            "aug.m=int(interval(0,30))",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    sweep = only_sweep(tmp_path)
    check_job_folders(sweep, 2, result.stderr)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"aug.n", "aug.m"}
    scores = [json.loads((sweep / str(n) / "metrics.json").read_text()) for n in (0, 1)]
    assert best["best_value"] == pytest.approx(max(s["val/f1_macro"] for s in scores))


@pytest.mark.slow
def test_ddp_on_cpu_writes_run_folder(image_dataset, tmp_path):
    # Two CPU processes (gloo): the trainer=ddp config with the accelerator swapped, and no
    # SyncBatchNorm, which PyTorch supports on GPUs only.
    run_dir = tmp_path / "run"
    result = run_train(
        [
            *TINY_RUN,
            f"dataset.path={image_dataset}",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.sync_batchnorm=false",
            f"hydra.run.dir={run_dir}",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    metrics = json.loads((run_dir / "metrics.json").read_text())
    split = pd.read_csv(run_dir / "split.csv")
    predictions = pd.read_csv(run_dir / "predictions_test.csv")
    # Each test image once, although DistributedSampler pads the ranks' shares to equal length.
    assert len(predictions) == (split["subset"] == "test").sum()
    assert predictions["path"].is_unique
    assert "test/f1_macro" in metrics
