"""The ``dataset=sim`` source: a simulated fish counter, generated on first use and cached.

The simulated videos go through the same ``prepare`` path as real ones, with the simulator's
ground-truth boxes as the annotation file. The result lives in ``<root>/<key>/``, where
``<key>`` is a hash of every setting that changes the output, so a changed config generates a
new set and an unchanged one is reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from fishaug.data.manifest import read_manifest
from fishaug.errors import DataError
from fishaug.ingest.pipeline import prepare_videos
from fishaug.sim.render import simulate_counter

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no fcntl; the atomic rename still protects.
    fcntl = None

log = logging.getLogger(__name__)

# Bump when the rendering or the crops change for the same settings, so caches are regenerated.
SIM_VERSION = 1
DONE_FILE = "done.json"


def sim_source(
    root: str,
    species: list[str],
    videos_per_species: int = 8,
    frames_per_video: int = 18,
    width: int = 160,
    height: int = 120,
    fps: float = 10.0,
    seed: int = 0,
    conditions: Mapping[str, float] | None = None,
    video_format: str = "avi",
    ingest: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Return the manifest of a simulated fish counter, generating it on first use.

    Args:
        root: folder under which each configuration gets its own ``<key>/`` folder.
        species, videos_per_species, frames_per_video, width, height, fps, seed, conditions,
            video_format: passed to ``fishaug.sim.render.simulate_counter``.
        ingest: keyword arguments of ``fishaug.ingest.pipeline.prepare_videos`` (frame
            selection, crops); the annotations are the simulator's boxes.
        progress: show progress bars while generating.

    Two processes that start at once with the same settings generate the set once, because the
    second waits for the lock file that the first holds (where the system has ``fcntl``). A set
    appears under its final name only when finished, by an atomic rename.

    Raises:
        ConfigError: a setting is invalid.
        DataError: a simulated video could not be prepared.
    """
    settings = {
        "version": SIM_VERSION,
        "species": list(species),
        "videos_per_species": videos_per_species,
        "frames_per_video": frames_per_video,
        "width": width,
        "height": height,
        "fps": fps,
        "seed": seed,
        "conditions": _plain(conditions or {}),
        "video_format": video_format,
        # The simulator supplies the boxes, so the motion detector's settings do not matter.
        "ingest": {k: v for k, v in _plain(ingest or {}).items() if k != "detector"},
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    root_path = Path(root).expanduser()
    target = root_path / key
    manifest_path = target / "dataset" / "manifest.csv"

    if not (target / DONE_FILE).is_file():
        root_path.mkdir(parents=True, exist_ok=True)
        with _exclusive_lock(root_path / f"{key}.lock"):
            if not (target / DONE_FILE).is_file():
                _generate(target, settings, progress)
    else:
        log.info("Reusing the simulated fish counter in %s", target)
    return read_manifest(manifest_path)


def _generate(target: Path, settings: dict[str, Any], progress: bool) -> None:
    started = time.perf_counter()
    log.info("Generating a simulated fish counter in %s (first use of these settings)", target)
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    try:
        sim = simulate_counter(
            staging,
            species=settings["species"],
            videos_per_species=settings["videos_per_species"],
            frames_per_video=settings["frames_per_video"],
            width=settings["width"],
            height=settings["height"],
            fps=settings["fps"],
            seed=settings["seed"],
            conditions=settings["conditions"],
            video_format=settings["video_format"],
            progress=progress,
        )
        result = prepare_videos(
            sim.videos_dir,
            staging / "dataset",
            annotations=sim.annotations,
            progress=progress,
            **settings["ingest"],
        )
        if result.failures:
            raise DataError(
                f"{len(result.failures)} simulated video(s) could not be prepared: "
                f"{result.failures[:3]}. This is a bug in the simulator or the codec set-up."
            )
        (staging / "settings.json").write_text(json.dumps(settings, indent=2, sort_keys=True))
        (staging / DONE_FILE).write_text(
            json.dumps({"crops": len(result.manifest), "seconds": time.perf_counter() - started})
        )
        # An earlier run that died before finishing can leave an unfinished folder behind.
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info(
        "Simulated fish counter ready in %.1f s: %d crops in %s",
        time.perf_counter() - started,
        len(result.manifest),
        target,
    )


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (waiting for it), where the system supports it."""
    if fcntl is None:
        yield
        return
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _plain(value: Any) -> Any:
    """Turn OmegaConf containers into plain dicts and lists, so they hash and pass as kwargs."""
    if isinstance(value, DictConfig) or OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value
