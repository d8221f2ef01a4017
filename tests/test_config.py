"""Every config option composes, and bad options fail with messages that list the valid ones."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest
from conftest import CONFIG_DIR, REPO_ROOT, compose_config
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from fishaug.augment import AUGMENTATIONS, build_augmentation
from fishaug.errors import ConfigError


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["aug", "model", "dataset", "data", "preset", "debug", "trainer"])
def test_every_option_composes(group, tmp_path):
    assert options(group), f"configs/{group}/ is empty"
    for option in options(group):
        cfg = compose_config("train", [f"{group}={option}"], tmp_path)
        assert OmegaConf.to_yaml(cfg)


# Options that read files made by another step; their own tests build them from such files.
NEEDS_FILES = {
    "faster_aa": r"aug\.policy is not set",
    "synthetic": r"aug\.sets",
}


@pytest.mark.parametrize("option", options("aug"))
def test_every_aug_option_builds(option, tmp_path):
    cfg = compose_config("train", [f"aug={option}"], tmp_path)
    params = OmegaConf.to_container(cfg.aug, resolve=True)
    assert params["name"] in AUGMENTATIONS
    if option in NEEDS_FILES:
        with pytest.raises(ConfigError, match=NEEDS_FILES[option]):
            build_augmentation(params, seed=0)
    else:
        build_augmentation(params, seed=0)


def test_documented_sweep_composes(tmp_path):
    for n, m in itertools.product([1, 2, 3], [5, 7, 9]):
        cfg = compose_config("train", ["aug=randaugment", f"aug.n={n}", f"aug.m={m}"], tmp_path)
        transform = build_augmentation(OmegaConf.to_container(cfg.aug))
        assert (transform.num_ops, transform.magnitude) == (n, m)


def test_cfg_job_prints_config():
    result = subprocess.run(
        [sys.executable, "train.py", "--cfg", "job", "aug=randaugment", "aug.n=3", "aug.m=9"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    printed = OmegaConf.create(result.stdout)
    assert printed.aug == {"name": "randaugment", "n": 3, "m": 9, "num_magnitude_bins": 31}


@pytest.mark.parametrize("group", ["aug", "model", "dataset", "data"])
def test_unknown_option_lists_valid_ones(group, tmp_path):
    with pytest.raises(ConfigCompositionException) as error:
        compose_config("train", [f"{group}=no_such_option"], tmp_path)
    message = str(error.value) + str(error.value.__cause__)
    assert "no_such_option" in message
    for option in options(group):
        assert option in message


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (
            ["aug=randaugment", "aug.m=31"],
            r"aug\.m=31 is out of range; use a whole number from 0 to 30",
        ),
        (["aug=randaugment", "aug.n=0"], r"aug\.n=0 is out of range"),
        (["aug=randaugment", "aug.m=2.5"], r"aug\.m=2\.5 is out of range"),
        (
            ["aug=augmix", "aug.severity=11"],
            r"aug\.severity=11 is out of range; use a whole number from 1 to 10",
        ),
        (["aug=augmix", "aug.width=0"], r"aug\.width=0 is out of range"),
        (["aug=augmix", "aug.depth=0"], r"aug\.depth=0 is out of range"),
        (
            ["aug=autoaugment", "aug.policy=mnist"],
            r"aug\.policy='mnist' is not valid; use one of \['cifar10', 'imagenet', 'svhn'\]",
        ),
        (["aug=none", "+aug.n=2"], r"aug=none has no parameter\(s\) \['n'\]"),
    ],
)
def test_out_of_range_aug_fails(overrides, match, tmp_path):
    cfg = compose_config("train", overrides, tmp_path)
    with pytest.raises(ConfigError, match=match):
        build_augmentation(OmegaConf.to_container(cfg.aug))


def test_out_of_range_aug_stops_run_before_data(train_config):
    from fishaug.training import train

    cfg = train_config(
        ["aug=randaugment", "aug.m=99", "dataset=manifest", "dataset.path=/nonexistent.csv"]
    )
    with pytest.raises(ConfigError, match=r"aug\.m=99"):
        train(cfg)


def test_unknown_aug_name_lists_registry():
    with pytest.raises(
        ConfigError, match=r"aug\.name='mixup' is not valid; use one of \[.*'randaugment'"
    ):
        build_augmentation({"name": "mixup"})
