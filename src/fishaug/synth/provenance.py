"""Provenance files: which real videos shaped a fine-tuning set, a model or a synthetic set.

Every folder a step writes (fine-tuning set, LoRA, DreamBooth model, merged model, generated or
filtered set) carries ``provenance.json``::

    {"kind": "lora", "videos": [...], "inputs": [{"path": ..., "kind": ..., "videos": [...]}],
     "details": {...}, "created": "2026-01-01T12:00:00+00:00"}

``videos`` is the union of the videos of the step itself and of all its inputs, so a synthetic
set lists every real video its generator was fine-tuned on (and, after filtering, the videos
the filter compared against). Training refuses a set that lists any of the run's val or test
videos, because images made from them would leak those videos into training.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from fishaug.errors import DataError

PROVENANCE_FILE = "provenance.json"


def write_provenance(
    folder: str | Path,
    kind: str,
    videos: Iterable[str] = (),
    inputs: Iterable[str | Path] = (),
    details: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``provenance.json`` into ``folder``; return its path.

    Args:
        kind: the step that made the folder (``finetune_set``, ``lora``, ``generated``, ...).
        videos: real videos the step itself used.
        inputs: folders the step read; each must carry its own provenance file, whose videos
            join this one's.
        details: free-form settings worth keeping (dataset, split, scores).

    Raises:
        DataError: an input folder has no readable provenance file.
    """
    own = {str(v) for v in videos}
    records = []
    for path in inputs:
        parent = read_provenance(path)
        records.append({"path": str(path), "kind": parent["kind"], "videos": parent["videos"]})
        own |= set(parent["videos"])
    content = {
        "kind": kind,
        "videos": sorted(own),
        "inputs": records,
        "details": dict(details or {}),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    target = Path(folder) / PROVENANCE_FILE
    target.write_text(json.dumps(content, indent=2, default=str))
    return target


def read_provenance(folder: str | Path) -> dict[str, Any]:
    """Read the provenance file of a folder (or the file itself).

    Raises:
        DataError: the file is missing or lacks ``kind`` and ``videos``.
    """
    path = Path(folder)
    if path.is_dir():
        path = path / PROVENANCE_FILE
    if not path.is_file():
        raise DataError(
            f"No {PROVENANCE_FILE} in '{path.parent}', so the real videos it was made from are "
            "unknown. Make the folder with the synth.py steps, or write the file by hand "
            'with {"kind": "external", "videos": [<real video ids it was made from>]}.'
        )
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"'{path}' is not valid JSON: {error}.") from error
    if not isinstance(content, dict) or not isinstance(content.get("videos"), list):
        raise DataError(f"'{path}' lacks a 'videos' list; it is not a provenance file.")
    content.setdefault("kind", "external")
    content["videos"] = [str(v) for v in content["videos"]]
    return content


def check_no_leak(videos: Iterable[str], split: pd.DataFrame, origin: str) -> None:
    """Raise unless none of ``videos`` is in the split's val or test subset.

    Raises:
        DataError: names the overlapping videos, their subsets, and how to fix it.
    """
    held_out = split[split["subset"].isin(["val", "test"])]
    subset_of = held_out.groupby("video")["subset"].first()
    leaked = sorted(set(map(str, videos)) & set(subset_of.index))
    if leaked:
        listing = ", ".join(f"{video} ({subset_of[video]})" for video in leaked[:5])
        raise DataError(
            f"{origin} was made from {len(leaked)} video(s) that this run holds out for "
            f"validation or testing: {listing}. Rebuild the set from this run's split (the same "
            "dataset, data.split_seed, data.fold and data.test_per_class or data.test_videos), "
            "or train with the split the set was made for."
        )
