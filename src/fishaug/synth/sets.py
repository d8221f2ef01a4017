"""Synthetic image sets on disk: ``manifest.csv`` plus ``provenance.json`` in one folder.

The manifest has the columns of a real manifest (``path`` relative to the folder, ``label``,
``video``) with the set id as ``video`` and ``source``, plus ``model`` (the generator's name),
``seed`` and ``prompt``. A filtered set adds ``score``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from fishaug.data.manifest import read_manifest
from fishaug.errors import DataError
from fishaug.synth.provenance import read_provenance

SET_MANIFEST = "manifest.csv"
SET_COLUMNS = ("path", "label", "video", "source", "model", "seed", "prompt")


def write_set_manifest(folder: str | Path, rows: pd.DataFrame) -> Path:
    """Write the set's rows to ``<folder>/manifest.csv`` with paths relative to the folder."""
    folder = Path(folder)
    missing = [c for c in SET_COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"Synthetic set rows lack column(s) {missing}.")
    # Relative paths (with ".." for images of another set) keep a work folder movable.
    base = folder.resolve()
    rows = rows.assign(
        path=[Path(os.path.relpath(Path(p).resolve(), base)).as_posix() for p in rows["path"]]
    )
    target = folder / SET_MANIFEST
    rows.to_csv(target, index=False)
    return target


def read_set(folder: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """Read a synthetic set folder (or its manifest CSV).

    Returns the rows with absolute paths and the real videos of its provenance file.

    Raises:
        DataError: the folder, manifest or provenance file is missing, or the manifest lacks a
            synthetic-set column.
    """
    path = Path(folder).expanduser()
    if path.is_file():
        path = path.parent
    if not path.is_dir():
        raise DataError(
            f"Synthetic set '{folder}' does not exist. Pass the output folder of "
            "`python synth.py step=generate` or `step=filter` (it contains manifest.csv)."
        )
    if not (path / SET_MANIFEST).is_file():
        raise DataError(f"Synthetic set '{path}' has no {SET_MANIFEST}.")
    provenance = read_provenance(path)
    rows = read_manifest(path / SET_MANIFEST)
    missing = [c for c in SET_COLUMNS if c not in rows.columns]
    if missing:
        raise DataError(
            f"'{path / SET_MANIFEST}' lacks the synthetic-set column(s) {missing}; "
            f"a synthetic set needs {list(SET_COLUMNS)}."
        )
    return rows, provenance["videos"]
