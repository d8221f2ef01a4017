"""Hydra multirun through train.py: a failing job does not stop the others and is reported."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
from conftest import REPO_ROOT


def test_multirun_survives_failed_job(image_dataset, tmp_path):
    sweep = tmp_path / "sweep"
    command = [
        sys.executable,
        "train.py",
        "-m",
        "dataset=manifest",
        f"dataset.path={image_dataset}",
        "data.test_per_class=1",
        "data.num_folds=3",
        "data.image_size=32",
        "debug=few_batches",
        "aug=randaugment",
        "aug.m=99,5",
        f"hydra.sweep.dir={sweep}",
        f"paths.data_dir={tmp_path / 'data'}",
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0, "a failed job must make the command fail"
    assert "aug.m=99 is out of range" in result.stderr

    jobs = pd.read_csv(sweep / "jobs.csv")
    assert jobs["status"].tolist() == ["failed", "completed"]
    assert "aug.m=99 is out of range" in jobs.loc[0, "error"]
    assert (sweep / "0" / "error.txt").is_file()
    metrics = json.loads((sweep / "1" / "metrics.json").read_text())
    assert "test/f1_macro" in metrics
    assert (sweep / "1" / ".hydra" / "config.yaml").is_file()


def test_run_folder_names_differ_for_simultaneous_starts():
    # The run folder pattern of configs/hydra/default.yaml, resolved in four processes at once.
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import hydra.core.utils; hydra.core.utils.setup_globals(); "
                "from fishaug.utils.resolvers import register_resolvers; "
                "from omegaconf import OmegaConf; register_resolvers(); "
                "print(OmegaConf.create({'d': '${now:%Y-%m-%d_%H-%M-%S-%f}_${pid:}'}).d)",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    folders = [p.communicate(timeout=60)[0].strip() for p in processes]
    assert len(set(folders)) == 4, folders


def test_multirun_with_default_folders(image_dataset, tmp_path):
    # No hydra.sweep.dir and no paths: the sweep folder comes from paths.log_dir under the
    # folder the command starts in.
    command = [
        sys.executable,
        str(REPO_ROOT / "train.py"),
        "-m",
        "dataset=manifest",
        f"dataset.path={image_dataset}",
        "data.test_per_class=1",
        "data.num_folds=3",
        "data.image_size=32",
        "debug=fdr",
        "aug=randaugment",
        "aug.m=5,7",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    sweeps = list((tmp_path / "logs" / "train" / "multiruns").iterdir())
    assert len(sweeps) == 1
    jobs = pd.read_csv(sweeps[0] / "jobs.csv")
    assert jobs["status"].tolist() == ["completed", "completed"]
