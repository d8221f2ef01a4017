"""Finding videos in ``<root>/<species>/<video>.<suffix>`` and naming species and videos."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from fishaug.errors import DataError
from fishaug.ingest.video import VIDEO_SUFFIXES

log = logging.getLogger(__name__)

_SEPARATORS = re.compile(r"[\s_]+")


def normalize_label(name: str) -> str:
    """Turn a species folder name into a label: lower case, runs of spaces and underscores to ``_``.

    ``" Brown  Trout"``, ``"brown_trout"`` and ``"BROWN TROUT"`` all become ``"brown_trout"``.
    """
    return _SEPARATORS.sub("_", name.strip()).strip("_").lower()


@dataclass(frozen=True)
class VideoFile:
    """One video of the input folder.

    Attributes:
        path: the video file.
        label: the normalised species name of its folder.
        relative: the path below the input folder without suffix, with ``/`` separators, as
            written in the folder (``"Brown Trout/clip01"``).
        video_id: ``<label>/<file stem>``, the ``video`` value of the manifest.
    """

    path: Path
    label: str
    relative: str
    video_id: str


def find_videos(
    root: str | Path, suffixes: tuple[str, ...] | list[str] = VIDEO_SUFFIXES
) -> list[VideoFile]:
    """List the videos of ``<root>/<species>/<video>.<suffix>``, sorted by video id.

    Species folders whose names normalise to the same label are merged. An empty species folder
    and a video lying directly in ``root`` are logged as warnings and skipped.

    Raises:
        DataError: ``root`` is not a folder, contains no video at all, or two videos get the same
            video id (same stem in one species, for example ``a.avi`` and ``a.mp4``).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"Video folder '{root}' does not exist or is not a folder. Pass the folder that "
            "holds one sub-folder per species with input_dir=<folder>."
        )
    wanted = {suffix.lower() for suffix in suffixes}

    loose = sorted(p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in wanted)
    if loose:
        log.warning(
            "Skipping %d video(s) directly in '%s' (%s): a video needs a species folder, "
            "<root>/<species>/<video>.",
            len(loose),
            root,
            ", ".join(loose[:5]),
        )

    videos: dict[str, VideoFile] = {}
    species_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for species_dir in species_dirs:
        label = normalize_label(species_dir.name)
        files = sorted(
            p for p in species_dir.iterdir() if p.is_file() and p.suffix.lower() in wanted
        )
        if not files:
            log.warning(
                "Species folder '%s' has no videos with suffixes %s; it is skipped.",
                species_dir,
                sorted(wanted),
            )
            continue
        for path in files:
            video = VideoFile(
                path=path,
                label=label,
                relative=f"{species_dir.name}/{path.stem}",
                video_id=f"{label}/{path.stem}",
            )
            if video.video_id in videos:
                raise DataError(
                    f"Videos '{videos[video.video_id].path}' and '{path}' both get the video id "
                    f"'{video.video_id}'. Rename one of them."
                )
            videos[video.video_id] = video

    if not videos:
        raise DataError(
            f"No videos with suffixes {sorted(wanted)} in the species folders of '{root}'. "
            "Expected <root>/<species>/<video>.avi (or .mp4, .mkv, .mov)."
        )
    return [videos[key] for key in sorted(videos)]
