"""The manifest: one row per image with its label and the video it comes from.

Columns: ``path`` (absolute once loaded), ``label``, ``video``; optional ``track``, ``camera``,
``frame``, ``x``, ``y``, ``w``, ``h`` and ``source``. Videos are the grouping unit of every split,
because frames of one video look alike.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

from fishaug.errors import DataError

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("path", "label", "video")
OPTIONAL_COLUMNS = ("track", "camera", "frame", "x", "y", "w", "h", "source")
TEXT_COLUMNS = ("path", "label", "video", "track", "camera", "source")


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest CSV and resolve relative image paths against the CSV's folder.

    Raises:
        DataError: the file does not exist, or the manifest is empty or lacks a required column.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"Manifest not found: '{path}'. Pass an existing CSV with dataset.path=...")
    frame = pd.read_csv(path, dtype={column: "string" for column in TEXT_COLUMNS})
    return validate_manifest(frame, base_dir=path.parent, origin=str(path))


def validate_manifest(
    frame: pd.DataFrame, base_dir: str | Path | None = None, origin: str = "manifest"
) -> pd.DataFrame:
    """Check the columns of a manifest and return a clean copy with absolute paths.

    Labels and video ids become strings with surrounding white space removed. A missing
    ``track`` column is left out; code that needs tracks checks for it.

    Raises:
        DataError: the manifest has no rows, lacks a required column, or has empty values in one.
    """
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise DataError(
            f"{origin} lacks the required column(s) {missing}; it has {list(frame.columns)}. "
            f"A manifest needs {list(REQUIRED_COLUMNS)}."
        )
    if frame.empty:
        raise DataError(f"{origin} is empty: it has a header but no image rows.")

    frame = frame.copy()
    for column in REQUIRED_COLUMNS:
        values = frame[column].astype("string").str.strip()
        empty = values.isna() | (values == "")
        if empty.any():
            rows = list(frame.index[empty][:5])
            raise DataError(f"{origin} has empty '{column}' values in rows {rows}.")
        frame[column] = values.astype(str)

    if base_dir is not None:
        base = Path(base_dir)
        frame["path"] = [str(p if Path(p).is_absolute() else (base / p)) for p in frame["path"]]
    return frame.reset_index(drop=True)


def check_images(frame: pd.DataFrame, skip_bad: bool = False) -> pd.DataFrame:
    """Verify that every image exists and decodes; drop the bad ones only when ``skip_bad`` is set.

    Raises:
        DataError: an image is missing or unreadable and ``skip_bad`` is False. The message lists
            up to five of them and how many there are.
    """
    bad: list[tuple[str, str]] = []
    for path in frame["path"]:
        try:
            with Image.open(path) as image:
                image.verify()
        except FileNotFoundError:
            bad.append((path, "not found"))
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            bad.append((path, f"unreadable ({error})"))
    if not bad:
        return frame

    listing = "; ".join(f"{path}: {reason}" for path, reason in bad[:5])
    if not skip_bad:
        raise DataError(
            f"{len(bad)} of {len(frame)} images are missing or unreadable: {listing}. "
            "Fix or remove them, or set data.skip_bad_images=true to leave them out."
        )
    log.warning("Skipping %d of %d missing or unreadable images: %s", len(bad), len(frame), listing)
    bad_paths = {path for path, _ in bad}
    kept = frame[~frame["path"].isin(bad_paths)].reset_index(drop=True)
    if kept.empty:
        raise DataError("Every image of the manifest is missing or unreadable.")
    return kept


def track_ids(frame: pd.DataFrame) -> pd.Series | None:
    """Return one id per fish track (video plus track), or None when the manifest has no tracks."""
    if "track" not in frame.columns or frame["track"].isna().all():
        return None
    return frame["video"].astype(str) + "/" + frame["track"].fillna("").astype(str)
