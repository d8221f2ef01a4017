"""Fish boxes from annotation files: a CSV table or YOLO label folders.

CSV: one row per box, columns ``video``, ``frame``, ``x``, ``y``, ``w``, ``h`` and optional
``label`` and ``track``. ``x``, ``y`` is the top-left corner and ``w``, ``h`` the size, in pixels
of the video frame. ``frame`` is the 0-based index of the frame in decoding order. A row whose
``x``, ``y``, ``w`` and ``h`` are all empty, or whose label is ``no_fish``, marks a frame
without fish.

YOLO: ``<folder>/<video>/<name ending in the frame index>.txt`` with one line
``class cx cy w h`` per box (centre and size as fractions of the frame size); an empty file marks
a frame without fish. Class names come from ``classes.txt`` or ``obj.names`` in ``<folder>``.

``video`` (or the YOLO sub-folder) names the video as ``<species folder>/<stem>``, as
``<label>/<stem>``, or by its file stem alone when that is unique. A video suffix is ignored.
Frames an annotation does not mention are not annotated and give no crops.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from fishaug.errors import ConfigError, DataError
from fishaug.ingest.layout import VideoFile, normalize_label
from fishaug.ingest.video import VIDEO_SUFFIXES

log = logging.getLogger(__name__)

NO_FISH_LABEL = "no_fish"
CSV_COLUMNS = ("video", "frame", "x", "y", "w", "h")
YOLO_CLASS_FILES = ("classes.txt", "obj.names")
FORMATS = ("auto", "csv", "yolo")

_TRAILING_NUMBER = re.compile(r"(\d+)\D*$")


@dataclass(frozen=True)
class Box:
    """A fish box: top-left corner ``x``, ``y`` and size ``w``, ``h``.

    In pixels of the video frame, or as fractions of the frame size when ``normalized`` is set
    (YOLO files); ``to_pixels`` converts. ``label`` and ``track`` are None when the annotation
    does not give them.
    """

    x: float
    y: float
    w: float
    h: float
    label: str | None = None
    track: str | None = None
    normalized: bool = False

    def to_pixels(self, width: int, height: int) -> Box:
        """Return the box in pixels of a ``width`` x ``height`` frame."""
        if not self.normalized:
            return self
        return replace(
            self,
            x=self.x * width,
            y=self.y * height,
            w=self.w * width,
            h=self.h * height,
            normalized=False,
        )


@dataclass
class VideoAnnotations:
    """The annotated frames of one video.

    Attributes:
        key: the video as the annotation source names it.
        source: the annotation file or folder, for messages.
        frames: frame index to its boxes; an empty list marks a frame without fish.
    """

    key: str
    source: str
    frames: dict[int, list[Box]] = field(default_factory=dict)


class AnnotationSet:
    """Annotations of many videos, matched to the videos found on disk with ``match``."""

    def __init__(self, videos: dict[str, VideoAnnotations], source: str):
        self.videos = videos
        self.source = source

    def __len__(self) -> int:
        return len(self.videos)

    def match(self, videos: list[VideoFile]) -> dict[str, VideoAnnotations]:
        """Map each video id to its annotations.

        Annotations that name no video on disk are logged as a warning that lists them.

        Raises:
            DataError: an annotation key fits several videos (a stem shared by two species), or
                two keys name the same video.
        """
        candidates: dict[str, list[VideoFile]] = {}
        for video in videos:
            for name in {video.relative, video.video_id, video.path.stem}:
                candidates.setdefault(name, []).append(video)

        matched: dict[str, VideoAnnotations] = {}
        unknown: list[str] = []
        for key, video_annotations in self.videos.items():
            found = candidates.get(key, [])
            if not found:
                unknown.append(key)
                continue
            if len(found) > 1:
                raise DataError(
                    f"Annotation video '{key}' in '{video_annotations.source}' fits several videos "
                    f"({', '.join(str(v.path) for v in found)}). Name it as <species>/<stem>."
                )
            video_id = found[0].video_id
            if video_id in matched:
                raise DataError(
                    f"Video '{found[0].path}' is annotated twice in '{self.source}', as "
                    f"'{matched[video_id].key}' and as '{key}'. Keep one of them."
                )
            matched[video_id] = video_annotations
        if unknown:
            log.warning(
                "Annotations in '%s' name %d video(s) not found in the video folder; their boxes "
                "are ignored: %s",
                self.source,
                len(unknown),
                ", ".join(sorted(unknown)[:10]),
            )
        return matched


def load_annotations(path: str | Path, annotation_format: str = "auto") -> AnnotationSet:
    """Read a CSV annotation file or a YOLO label folder.

    Args:
        path: a ``.csv`` file, or a folder of YOLO ``.txt`` files.
        annotation_format: ``csv``, ``yolo``, or ``auto`` (a file is CSV, a folder YOLO).

    Raises:
        ConfigError: ``annotation_format`` is unknown.
        DataError: ``path`` does not exist, or a row or line is invalid (the message names the
            file and the row or line).
    """
    if annotation_format not in FORMATS:
        raise ConfigError(
            f"ingest.annotation_format={annotation_format!r} is not valid; use one of {list(FORMATS)}."
        )
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"Annotation file or folder not found: '{path}'. Check annotations=...")
    if annotation_format == "auto":
        annotation_format = "yolo" if path.is_dir() else "csv"
    if annotation_format == "csv":
        return read_csv_annotations(path)
    return read_yolo_annotations(path)


def read_csv_annotations(path: str | Path) -> AnnotationSet:
    """Read boxes from a CSV file (columns in the module docstring).

    Raises:
        DataError: the file is not a readable CSV or lacks a column. Or a row has an invalid
            frame index, a partly empty or non-numeric box, or a width or height of 0 or less.
            Or a frame is marked as without fish and also has boxes.
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"Could not read annotation CSV '{path}': {error}") from error
    missing = [column for column in CSV_COLUMNS if column not in table.columns]
    if missing:
        raise DataError(
            f"Annotation CSV '{path}' lacks the column(s) {missing}; it has "
            f"{list(table.columns)}. Expected {list(CSV_COLUMNS)} and optional label, track."
        )

    videos: dict[str, VideoAnnotations] = {}
    no_fish: dict[str, set[int]] = {}
    for index, row in table.iterrows():
        where = f"'{path}' line {int(index) + 2}"
        key = _video_key(row["video"])
        if not key:
            raise DataError(f"{where} has an empty 'video' value.")
        frame = _frame_index(row["frame"], where)
        annotations = videos.setdefault(key, VideoAnnotations(key, str(path)))
        boxes = annotations.frames.setdefault(frame, [])

        label = normalize_label(row.get("label", "") or "") or None
        values = [row[column].strip() for column in ("x", "y", "w", "h")]
        if label == NO_FISH_LABEL or all(value == "" for value in values):
            no_fish.setdefault(key, set()).add(frame)
        else:
            x, y, w, h = _box_values(values, where)
            track = (row.get("track", "") or "").strip() or None
            boxes.append(Box(x, y, w, h, label=label, track=track))
        if boxes and frame in no_fish.get(key, set()):
            raise DataError(
                f"{where}: frame {frame} of video '{key}' is marked as without fish and also has "
                "boxes. Remove the no-fish row or the boxes."
            )
    log.info("Read %d annotation rows for %d videos from '%s'", len(table), len(videos), path)
    return AnnotationSet(videos, str(path))


def read_yolo_annotations(folder: str | Path) -> AnnotationSet:
    """Read YOLO label files from ``<folder>/<video>/<frame>.txt`` (format in the module docstring).

    Raises:
        DataError: a label file lies directly in ``folder``, its name has no frame number, or a
            line is not ``class cx cy w h`` with a known class and a positive size.
    """
    folder = Path(folder)
    class_names = _read_class_names(folder)
    files = sorted(
        p for p in folder.rglob("*.txt") if p.is_file() and p.name not in YOLO_CLASS_FILES
    )
    videos: dict[str, VideoAnnotations] = {}
    for label_file in files:
        relative = label_file.relative_to(folder)
        if len(relative.parts) < 2:
            raise DataError(
                f"YOLO label file '{label_file}' lies directly in '{folder}'; expected "
                "<folder>/<video>/<frame>.txt, with the video's stem or <species>/<stem>."
            )
        key = _video_key(relative.parent.as_posix())
        match = _TRAILING_NUMBER.search(label_file.stem)
        if match is None:
            raise DataError(
                f"YOLO label file '{label_file}' has no frame number at the end of its name "
                "(for example frame_000012.txt)."
            )
        annotations = videos.setdefault(key, VideoAnnotations(key, str(folder)))
        boxes = annotations.frames.setdefault(int(match.group(1)), [])
        for number, line in enumerate(label_file.read_text().splitlines(), start=1):
            if line.strip():
                boxes.append(_yolo_box(line, class_names, f"'{label_file}' line {number}"))
    if not videos:
        raise DataError(f"No YOLO label files (<video>/<frame>.txt) under '{folder}'.")
    log.info(
        "Read YOLO labels of %d files for %d videos from '%s'", len(files), len(videos), folder
    )
    return AnnotationSet(videos, str(folder))


def _video_key(value: str) -> str:
    key = value.strip().replace("\\", "/").removeprefix("./")
    suffix = Path(key).suffix
    if suffix.lower() in VIDEO_SUFFIXES:
        key = key[: -len(suffix)]
    return key


def _frame_index(value: str, where: str) -> int:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0 or number != int(number):
        raise DataError(f"{where} has frame={value!r}; use a whole frame index of 0 or more.")
    return int(number)


def _box_values(values: list[str], where: str) -> tuple[float, float, float, float]:
    if any(value == "" for value in values):
        raise DataError(
            f"{where} has a partly empty box (x, y, w, h = {values}). Fill all four, or leave "
            "all four empty to mark a frame without fish."
        )
    try:
        x, y, w, h = (float(value) for value in values)
    except ValueError as error:
        raise DataError(f"{where} has a non-numeric box value: {error}.") from error
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise DataError(f"{where} has a box value that is not a finite number: {values}.")
    if w <= 0 or h <= 0:
        raise DataError(f"{where} has a box of size {w} x {h}; width and height must be above 0.")
    return x, y, w, h


def _read_class_names(folder: Path) -> list[str] | None:
    for name in YOLO_CLASS_FILES:
        path = folder / name
        if path.is_file():
            return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return None


def _yolo_box(line: str, class_names: list[str] | None, where: str) -> Box:
    fields = line.split()
    # Six fields are detector output with a confidence score at the end; it is ignored.
    if len(fields) not in (5, 6):
        raise DataError(f"{where} has {len(fields)} fields; expected 'class cx cy w h'.")
    try:
        class_id = int(fields[0])
        cx, cy, w, h = (float(value) for value in fields[1:5])
    except ValueError as error:
        raise DataError(f"{where} is not 'class cx cy w h' with numbers: {line!r}.") from error
    if not all(math.isfinite(v) for v in (cx, cy, w, h)) or w <= 0 or h <= 0:
        raise DataError(
            f"{where} has the box {line!r}; width and height must be finite fractions above 0."
        )
    label = None
    if class_names is not None:
        if not 0 <= class_id < len(class_names):
            raise DataError(
                f"{where} has class {class_id}, but the class file lists {len(class_names)} "
                f"classes (0 to {len(class_names) - 1})."
            )
        label = normalize_label(class_names[class_id])
    return Box(cx - w / 2, cy - h / 2, w, h, label=label, normalized=True)
