"""Experiment configs of the study, the plan of their jobs, and the Makefile targets around them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pandas as pd
import pytest
from conftest import CONFIG_DIR, REPO_ROOT, compose_config
from omegaconf import OmegaConf

from fishaug.errors import ConfigError
from fishaug.utils.cost import EpochTimes, RunShape, measured_epoch_times
from fishaug.utils.plan import Planner, check_splits, plan_sweeps, split_experiments
from fishaug.utils.resume import config_key

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
# Jobs per table: 2 models x 5 splits x the augmentation grid (synthetic: 4 video folds only).
TABLE_JOBS = {
    "baseline": 10,
    "autoaugment": 30,
    "randaugment": 180,
    "augmix": 120,
    "faster_aa": 30,
    "synthetic": 32,
}
SMALL_RUN = [
    "dataset=manifest",
    "data.test_per_class=1",
    "data.num_folds=3",
    "preset=cpu",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "data.image_size=32",
    "data.num_workers=0",
    "logger=csv",
]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes(name, tmp_path):
    cfg = compose_config("train", [f"experiment={name}"], tmp_path)

    assert cfg.hydra.runtime.choices.experiment == name
    assert cfg.trainer.max_epochs == 100, "experiments use the study's settings (preset=thesis)"
    assert cfg.data.batch_size == 32
    assert cfg.hydra.sweeper.params, "an experiment sets its sweep in hydra.sweeper.params"
    assert OmegaConf.to_yaml(cfg)


@pytest.mark.parametrize(("name", "jobs"), TABLE_JOBS.items())
def test_table_job_count(name, jobs):
    assert len(Planner(CONFIG_DIR).sweep([f"experiment={name}"])) == jobs


@pytest.mark.slow
def test_plan_lists_whole_study(tmp_path):
    tables = ",".join(TABLE_JOBS)
    table = plan_sweeps([f"experiment={tables}", f"paths.log_dir={tmp_path}"], CONFIG_DIR)

    assert len(table) == sum(TABLE_JOBS.values()) == 402
    assert table.groupby("experiment", sort=False).size().to_dict() == TABLE_JOBS
    assert table["key"].is_unique
    assert (table["epochs"] == 100).all()


def test_every_table_has_make_target():
    makefile = (REPO_ROOT / "Makefile").read_text()
    for name in TABLE_JOBS:
        assert f"\ntable-{name}:" in makefile, name
    assert set(TABLE_JOBS) <= set(EXPERIMENTS)


def test_protocol_sweeps_models_and_splits():
    jobs = Planner(CONFIG_DIR).sweep(["experiment=baseline"])
    pairs = {(job[0], job[1]) for job in jobs}
    assert len(pairs) == 10
    assert ("model=resnet50", "data={scheme:random_split,fold:0}") in pairs
    assert ("model=resnet18", "data={scheme:video_folds,fold:3}") in pairs


def test_command_line_narrows_sweep():
    # A key given on the command line replaces the sweeper's values for that key.
    jobs = Planner(CONFIG_DIR).sweep(
        ["experiment=randaugment", "model=resnet18", "data=video_folds", "data.fold=0,1", "aug.n=2"]
    )
    assert len(jobs) == 2 * 6
    assert all("aug.n=2" in job for job in jobs)


def test_plan_composes_each_job(tmp_path):
    table = plan_sweeps(
        ["experiment=autoaugment", f"paths.log_dir={tmp_path}", "model=resnet18"], CONFIG_DIR
    )
    assert len(table) == 15
    assert set(table["split"]) == {
        "random_split-0",
        "video_folds-0",
        "video_folds-1",
        "video_folds-2",
        "video_folds-3",
    }
    assert set(table["status"]) == {"new"}
    assert (table["epochs"] == 100).all()
    assert table["key"].nunique() == 15
    assert (table["aug_error"] == "").all()


def test_plan_reports_missing_policy_files(tmp_path):
    table = plan_sweeps(
        ["experiment=faster_aa", f"study_dir={tmp_path}", "model=resnet18", "data=video_folds"],
        CONFIG_DIR,
    )
    assert len(table) == 3
    expected = tmp_path / "policies" / "video_folds-0" / "policies" / "epoch_020.json"
    assert f"aug.policy='{expected}' does not exist" in table.loc[0, "aug_error"]


def test_plan_reports_missing_synthetic_sets(tmp_path):
    # The folders that `make synthetic-sets` writes: <study_dir>/synth/<split>/sets/<set>/filtered
    table = plan_sweeps(
        ["experiment=synthetic", f"study_dir={tmp_path}", "model=resnet18"], CONFIG_DIR
    )
    assert len(table) == 16
    expected = tmp_path / "synth" / "video_folds-0" / "sets" / "lora" / "filtered"
    assert f"Synthetic set '{expected}' does not exist" in table.loc[0, "aug_error"]
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "$(STUDY_DIR)/synth/$(s)/sets/$(k)/filtered/manifest.csv" in makefile


def test_plan_rejects_key_missing_from_aug():
    with pytest.raises(
        ConfigError,
        match=r"experiment=randaugment, job 0 .*aug\.foo is not a key of aug=randaugment; "
        r"its keys are \['m', 'n', 'name', 'num_magnitude_bins'\]",
    ):
        plan_sweeps(["experiment=randaugment", "aug.foo=1,2"], CONFIG_DIR)


def test_plan_rejects_added_key_missing_from_aug():
    # +aug.n composes, so the check against the augmentation's parameters catches it.
    with pytest.raises(
        ConfigError,
        match=r"aug=autoaugment has no parameter\(s\) \['n'\]; its parameters are \['policy'\]",
    ):
        plan_sweeps(["experiment=autoaugment", "+aug.n=1,2"], CONFIG_DIR)


def test_plan_rejects_optuna_sweep():
    with pytest.raises(ConfigError, match=r"grid sweeps of Hydra's basic sweeper only"):
        plan_sweeps(["experiment=randaugment_search"], CONFIG_DIR)


def test_split_experiments():
    assert split_experiments(["experiment=a,b", "aug.n=1,2"]) == (["a", "b"], ["aug.n=1,2"])
    assert split_experiments(["aug.n=1"]) == ([None], ["aug.n=1"])


def small_study_overrides(image_dataset, tmp_path):
    return [
        *SMALL_RUN,
        f"dataset.path={image_dataset}",
        f"study_dir={tmp_path / 'study'}",
        "experiment=baseline",
        "model=resnet18",
    ]


def test_plan_key_matches_training_key(train_config, image_dataset, tmp_path):
    common = small_study_overrides(image_dataset, tmp_path)
    sweep = "data={scheme:video_folds,fold:0},{scheme:video_folds,fold:1}"
    table = plan_sweeps([*common, sweep], CONFIG_DIR)

    for fold in (0, 1):
        cfg = train_config([*common, f"data={{scheme:video_folds,fold:{fold}}}"])
        assert table["key"].iloc[fold] == config_key(cfg), fold


@pytest.mark.slow
def test_plan_marks_finished_job_done(train_config, image_dataset, tmp_path):
    from fishaug.training import train

    logs = tmp_path / "logs"
    common = small_study_overrides(image_dataset, tmp_path)
    cfg = train_config([*common, "data={scheme:video_folds,fold:0}"], output_dir=logs / "run0")
    train(cfg)
    # Hydra saves the job's config there; the plan reads the run's settings from it.
    (logs / "run0" / ".hydra").mkdir()
    OmegaConf.save(cfg, logs / "run0" / ".hydra" / "config.yaml")

    sweep = "data={scheme:video_folds,fold:0},{scheme:video_folds,fold:1}"
    table = plan_sweeps([*common, f"paths.log_dir={logs}", sweep], CONFIG_DIR)

    assert table["status"].tolist() == ["done", "new"]
    assert table["fit_s"].iloc[0] == 0
    measured = json.loads((logs / "run0" / "metrics.json").read_text())["time/epoch_s"]
    assert table["epoch_s"].iloc[1] == pytest.approx(measured)
    assert table["estimate_from"].iloc[1] == "measured (1 runs)"


def write_run(folder, arch, size, epoch_s, **trainer):
    (folder / ".hydra").mkdir(parents=True)
    config = {
        "dataset": {"_target_": "src", "root": "/data"},
        "model": {"arch": arch},
        "data": {"image_size": size, "batch_size": 32},
        "trainer": {"accelerator": "cpu", "precision": "32-true", **trainer},
    }
    OmegaConf.save(OmegaConf.create(config), folder / ".hydra" / "config.yaml")
    (folder / "metrics.json").write_text(json.dumps({"time/epoch_s": epoch_s}))


def test_measured_epoch_times_skip_partial_runs(tmp_path):
    write_run(tmp_path / "a", "resnet18", 64, 4.0)
    write_run(tmp_path / "b", "resnet18", 64, 6.0)
    write_run(tmp_path / "limited", "resnet18", 64, 1.0, limit_train_batches=3)
    write_run(tmp_path / "reused", "resnet18", 64, 1.0)
    (tmp_path / "reused" / "reused_from.txt").write_text("a\n")

    measured = measured_epoch_times(tmp_path)

    assert sorted(measured["epoch_s"]) == [4.0, 6.0]


def test_epoch_time_estimates():
    measured = pd.DataFrame(
        [
            {
                "dataset": "src:/data",
                "arch": "resnet18",
                "image_size": 64,
                "batch_size": 32,
                "accelerator": "cpu",
                "precision": "32-true",
                "epoch_s": seconds,
                "run": "r",
            }
            for seconds in (4.0, 6.0)
        ]
    )
    times = EpochTimes(measured)
    shape = RunShape("src:/data", "resnet18", 64, 32, "cpu", "32-true")

    assert times.estimate(shape) == (5.0, "measured (2 runs)")
    seconds, source = times.estimate(RunShape("src:/data", "resnet18", 128, 32, "cpu", "32-true"))
    assert seconds == pytest.approx(20.0)
    assert source == "measured at 64 px, scaled"
    seconds, source = times.estimate(RunShape("other", "resnet50", 224, 32, "cpu", "32-true"))
    assert seconds > 0
    assert source.startswith("default")


@pytest.fixture
def make_env(tmp_path):
    """Run make with a set-up stamp in tmp_path, so that no target reinstalls the venv."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    stamp = tmp_path / "installed"
    stamp.touch()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["make", *args, f"STAMP={stamp}", f"STUDY_DIR={tmp_path / 'study'}"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "MAKEFLAGS": ""},
        )

    return run


def test_make_dry_run_shows_steps_in_order(make_env):
    result = make_env("-n", "reproduce")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    check = next(i for i, line in enumerate(lines) if "--check-data" in line)
    searches = [i for i, line in enumerate(lines) if "search.py" in line]
    tables = [i for i, line in enumerate(lines) if "train.py -m" in line]
    assert len(searches) == 5
    assert len(tables) == len(TABLE_JOBS)
    assert check < min(searches)
    assert max(searches) < min(tables)
    assert sum("step=filter" in line for line in lines) == 8
    # Intermediate outputs (fine-tuned weights, generated sets) stay on disk.
    assert not [line for line in lines if line.startswith("rm ")]


def test_make_reproduce_dry_run_calls_plan(make_env):
    result = make_env("-n", "reproduce", "DRY_RUN=1")
    assert result.returncode == 0, result.stderr
    assert "plan.py experiment=baseline,autoaugment,randaugment,augmix,faster_aa,synthetic" in (
        result.stdout
    )
    assert "search.py" not in result.stdout


def test_make_table_without_policies_names_target(make_env, tmp_path):
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "splits.json").write_text("{}")
    result = make_env("table-faster_aa")
    assert result.returncode != 0
    assert "Missing 5 input file(s)" in result.stderr
    assert "Run 'make policies' first" in result.stderr


def test_make_table_rejects_unknown_aug_key(make_env, tmp_path):
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "splits.json").write_text("{}")
    result = make_env("table-randaugment", "SWEEP_ARGS=aug.mag=5,9")
    assert result.returncode != 0
    assert "aug.mag is not a key of aug=randaugment" in result.stderr
    assert "['m', 'n', 'name', 'num_magnitude_bins']" in result.stderr
    assert "train.py -m" not in result.stdout


def test_check_splits_builds_every_split(image_dataset):
    overrides = [
        "experiment=protocol",
        "dataset=manifest",
        f"dataset.path={image_dataset}",
        "data.test_per_class=1",
        "data.num_workers=0",
    ]
    splits = check_splits(overrides, CONFIG_DIR)

    assert sorted(splits) == [
        "manifest:random_split-0",
        "manifest:video_folds-0",
        "manifest:video_folds-1",
        "manifest:video_folds-2",
        "manifest:video_folds-3",
    ]
    for sizes in splits.values():
        assert sizes["test"] == {"images": 12, "videos": 3}
        assert sizes["train"]["images"] + sizes["val"]["images"] == 60


def test_check_splits_rejects_missing_fold(image_dataset):
    overrides = [
        "experiment=protocol",
        "dataset=manifest",
        f"dataset.path={image_dataset}",
        "data.test_per_class=1",
        "data.num_folds=3",
    ]
    with pytest.raises(ConfigError, match=r"data\.fold=3 is out of range for data\.num_folds=3"):
        check_splits(overrides, CONFIG_DIR)
