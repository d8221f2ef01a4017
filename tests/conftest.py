"""Shared fixtures: composed Hydra configs, a small image data set written to disk, FishCam-AT."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from PIL import Image

from fishaug.utils.resolvers import register_resolvers

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"
FISHCAM_ROOT = Path(os.environ.get("FISHCAM_ROOT", REPO_ROOT.parent / "shared/data/fishcam_at"))

register_resolvers()


@pytest.fixture
def fishcam_root() -> Path:
    """The FishCam-AT sample beside the checkout; tests that need it skip without it."""
    if not (FISHCAM_ROOT / "data").is_dir():
        pytest.skip(
            f"FishCam-AT sample not found at {FISHCAM_ROOT}; set FISHCAM_ROOT to a copy "
            "(the folder holding data/<species>/) to run this test."
        )
    return FISHCAM_ROOT


def compose_config(
    config_name: str,
    overrides: list[str],
    output_dir: Path | None = None,
    log_dir: Path | None = None,
) -> DictConfig:
    """Compose a config from configs/ as Hydra would for a run in output_dir.

    Earlier runs are looked up in ``log_dir``, by default ``output_dir/logs``.
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
            cfg.hydra.runtime.cwd = str(REPO_ROOT)
            cfg.hydra.job.num = 0
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
            cfg.paths.log_dir = str(log_dir or output_dir / "logs")
            cfg.paths.data_dir = str(output_dir / "data")
    return cfg


@pytest.fixture
def train_config(tmp_path: Path) -> Callable[..., DictConfig]:
    """Factory: ``train_config(overrides)`` composes train.yaml into tmp_path, shrunk for a CPU."""

    def factory(
        overrides: list[str] = (), output_dir: Path | None = None, log_dir: Path | None = None
    ) -> DictConfig:
        base = [
            "trainer.accelerator=cpu",
            "data.num_workers=0",
            "data.image_size=32",
            "logger=csv",
        ]
        return compose_config(
            "train", base + list(overrides), output_dir or tmp_path / "run", log_dir
        )

    return factory


def write_image_dataset(
    root: Path,
    classes: int = 3,
    videos_per_class: int = 6,
    images_per_video: int = 4,
    size: tuple[int, int] = (40, 24),
    seed: int = 0,
) -> Path:
    """Write a small image set whose classes differ in colour; return its manifest CSV.

    Each class has its own base colour and each video its own brightness, so a model can learn the
    classes in a few steps. Images lie in ``<root>/<label>/<video>/`` and the manifest uses paths
    relative to ``root``.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(classes):
        label = f"species{c}"
        colour = np.array([(c * 97) % 256, (c * 57 + 80) % 256, (c * 151 + 40) % 256])
        for v in range(videos_per_class):
            video = f"{label}_video{v}"
            folder = root / label / video
            folder.mkdir(parents=True, exist_ok=True)
            brightness = 0.6 + 0.4 * rng.random()
            for i in range(images_per_video):
                noise = rng.normal(0, 12, size=(size[1], size[0], 3))
                pixels = np.clip(colour * brightness + noise, 0, 255).astype(np.uint8)
                relative = Path(label) / video / f"frame{i:03d}.png"
                Image.fromarray(pixels).save(root / relative)
                rows.append(
                    {
                        "path": str(relative),
                        "label": label,
                        "video": video,
                        "track": "fish1",
                        "frame": i,
                    }
                )
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


@pytest.fixture
def image_dataset(tmp_path: Path) -> Path:
    """A 3-class image set of 18 videos on disk; returns its manifest CSV."""
    return write_image_dataset(tmp_path / "images")
