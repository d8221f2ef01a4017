"""Find earlier runs of the same configuration: finished ones to reuse, interrupted ones to resume.

A run's key is a hash of its resolved config without the settings that do not change results
(paths, logging, progress bars, worker counts). Each run writes its key into ``run_key.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

KEY_FILE = "run_key.json"
RESULT_FILES = (
    "metrics.json",
    "split.csv",
    "predictions_val.csv",
    "predictions_test.csv",
    "confusion_val.csv",
    "confusion_val.png",
    "confusion_test.csv",
    "confusion_test.png",
)
# Settings that change where and how a run reports, not what it computes.
IGNORED_KEYS = (
    "paths",
    "hydra",
    "logger",
    "tags",
    "ckpt_path",
    "skip_completed",
    "resume",
    "data.num_workers",
    "data.cache_dir",
    "trainer.default_root_dir",
    "trainer.enable_progress_bar",
    "callbacks.model_checkpoint.dirpath",
)


@dataclass
class PreviousRuns:
    """Earlier run folders with the same key: the newest finished one and the newest resumable."""

    completed: Path | None = None
    last_checkpoint: Path | None = None


def config_key(cfg: DictConfig) -> str:
    """Return a 16-hex-digit hash of the resolved config without ``IGNORED_KEYS``."""
    config = OmegaConf.to_container(cfg, resolve=True)
    for dotted in IGNORED_KEYS:
        *parents, last = dotted.split(".")
        node = config
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def write_key(output_dir: Path, key: str) -> None:
    (output_dir / KEY_FILE).write_text(json.dumps({"key": key}))


def find_previous(search_root: Path, key: str, exclude: Path) -> PreviousRuns:
    """Scan run folders below ``search_root`` for ``key``, leaving out ``exclude`` (this run)."""
    found = PreviousRuns()
    if not search_root.is_dir():
        return found
    finished: list[Path] = []
    checkpoints: list[Path] = []
    for key_file in search_root.rglob(KEY_FILE):
        folder = key_file.parent
        if folder.resolve() == exclude.resolve():
            continue
        try:
            if json.loads(key_file.read_text()).get("key") != key:
                continue
        except (json.JSONDecodeError, OSError):
            continue
        if (folder / "metrics.json").is_file():
            finished.append(folder)
        elif (folder / "checkpoints" / "last.ckpt").is_file():
            checkpoints.append(folder / "checkpoints" / "last.ckpt")
    if finished:
        found.completed = max(finished, key=lambda p: (p / "metrics.json").stat().st_mtime)
    if checkpoints:
        found.last_checkpoint = max(checkpoints, key=lambda p: p.stat().st_mtime)
    return found


def reuse_results(source: Path, output_dir: Path) -> dict:
    """Copy a finished run's result files into ``output_dir`` and return its metrics.

    Checkpoints stay in ``source``; ``reused_from.txt`` points there.
    """
    for name in RESULT_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, output_dir / name)
    (output_dir / "reused_from.txt").write_text(f"{source.resolve()}\n")
    return json.loads((output_dir / "metrics.json").read_text())
