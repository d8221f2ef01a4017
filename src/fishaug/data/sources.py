"""Dataset sources: each turns a dataset on disk into a manifest DataFrame.

A Hydra ``dataset`` config names one of these functions in ``_target_``; the training entry
point calls it and hands the manifest to the DataModule.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from fishaug.data.manifest import read_manifest, validate_manifest
from fishaug.errors import ConfigError, DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def manifest_source(path: str) -> pd.DataFrame:
    """Load a manifest CSV given by the user (see :mod:`fishaug.data.manifest` for its columns)."""
    return read_manifest(path)


def folder_source(
    root: str,
    video_from: str = "subfolder",
    pattern: str | None = None,
    suffixes: tuple[str, ...] | list[str] = IMAGE_SUFFIXES,
) -> pd.DataFrame:
    """Build a manifest from ``<root>/<label>/...`` image folders.

    Args:
        root: folder with one sub-folder per class.
        video_from: ``subfolder`` takes the video id from ``<root>/<label>/<video>/<image>``;
            ``pattern`` matches ``pattern`` against each file name.
        pattern: regular expression with a named group ``video`` and optional groups ``track``,
            ``camera`` and ``frame``; used when ``video_from=pattern``.
        suffixes: image file endings to collect, case-insensitive.

    Raises:
        ConfigError: ``video_from`` is unknown, or ``pattern`` is missing or lacks a ``video`` group.
        DataError: ``root`` does not exist, has no class folders, or a file name does not match.
    """
    if video_from not in ("subfolder", "pattern"):
        raise ConfigError(
            f"dataset.video_from={video_from!r} is not valid; use 'subfolder' or 'pattern'."
        )
    regex = None
    if video_from == "pattern":
        if not pattern:
            raise ConfigError("dataset.video_from=pattern needs dataset.pattern=<regex>.")
        regex = re.compile(pattern)
        if "video" not in regex.groupindex:
            raise ConfigError(
                f"dataset.pattern={pattern!r} has no named group 'video'; "
                "write it as (?P<video>...)."
            )

    root_path = _existing_folder(root, "dataset.root")
    class_dirs = sorted(p for p in root_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"No class folders in '{root_path}'; expected <root>/<label>/<images>.")

    wanted = {s.lower() for s in suffixes}
    rows = []
    for class_dir in class_dirs:
        images = sorted(
            p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in wanted
        )
        if not images:
            log.warning("Class folder '%s' has no images; it is left out.", class_dir)
        for image in images:
            row = {"path": str(image), "label": class_dir.name}
            if regex is None:
                relative = image.relative_to(class_dir)
                if len(relative.parts) < 2:
                    raise DataError(
                        f"'{image}' lies directly in its class folder, so it has no video "
                        "sub-folder. Put images in <root>/<label>/<video>/ or set "
                        "dataset.video_from=pattern with a dataset.pattern."
                    )
                row["video"] = relative.parts[0]
            else:
                match = regex.search(image.name)
                if match is None:
                    raise DataError(
                        f"File name '{image.name}' does not match dataset.pattern={pattern!r}."
                    )
                row.update({k: v for k, v in match.groupdict().items() if v is not None})
            rows.append(row)
    if not rows:
        raise DataError(f"No images with endings {sorted(wanted)} under '{root_path}'.")
    return validate_manifest(pd.DataFrame(rows), origin=f"image folder '{root_path}'")


def _existing_folder(path: str | Path, key: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(f"{key}='{path}' does not exist or is not a folder. Check the path.")
    return folder
