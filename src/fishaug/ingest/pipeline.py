"""The prepare pipeline: videos to selected frames to fish crops to ``manifest.csv``.

Output layout in ``dataset_dir``:

- ``images/<label>/<video stem>/frame<index>_<k>.png``: crop ``k`` of frame ``index``;
- ``manifest.csv``: ``path`` (relative to ``dataset_dir``), ``label``, ``video``, ``track``,
  ``frame``, ``x``, ``y``, ``w``, ``h`` (the fish box in frame pixels), ready for
  ``dataset=manifest``;
- ``summary.csv``: per class the videos, failed videos, frames read, frames kept, kept frames
  without fish, and crops;
- ``failed_videos.csv``: the videos that could not be read, when there are any;
- ``videos/<label>/<video stem>.json``: the record of a finished video. A re-run reuses a
  video whose record matches the video file and the settings, and redoes the others.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from fishaug.errors import ConfigError, DataError
from fishaug.ingest.annotations import Box, VideoAnnotations, load_annotations
from fishaug.ingest.crops import clip_box, crop_region, cut, is_inside
from fishaug.ingest.detector import MotionDetector
from fishaug.ingest.frames import FrameSelector
from fishaug.ingest.layout import VideoFile, find_videos
from fishaug.ingest.video import VIDEO_SUFFIXES, header_frame_count, read_frames

log = logging.getLogger(__name__)

# Bump when the crops or records that this module writes change, so old records are redone.
RECORD_VERSION = 1
MANIFEST_COLUMNS = ("path", "label", "video", "track", "frame", "x", "y", "w", "h")
SUMMARY_COUNTS = ("frames_read", "frames_kept", "empty_frames", "crops")
DEFAULT_TRACK = "fish1"


@dataclass(frozen=True)
class CropSettings:
    """Settings that turn boxes into crop images.

    Attributes:
        square: cut a square with the box's longest side, centred on the fish, instead of the
            box itself (Stable Diffusion fine-tuning wants square images).
        margin: widen the box by this fraction of its size on each side before cutting.
        min_size: boxes whose width or height (after clipping) is below this many pixels are
            skipped.
        out_of_frame: ``clip`` cuts an annotation box that reaches past the frame edge down to
            the frame; ``reject`` drops it. A box entirely outside is always dropped.
        image_format: ``png`` (lossless) or ``jpg``.
    """

    square: bool = False
    margin: float = 0.1
    min_size: int = 4
    out_of_frame: str = "clip"
    image_format: str = "png"

    def __post_init__(self) -> None:
        if not 0 <= self.margin <= 1:
            raise ConfigError(f"ingest.crop.margin={self.margin} is out of range; use 0 to 1.")
        if self.min_size < 1:
            raise ConfigError(
                f"ingest.crop.min_size={self.min_size} is out of range; use 1 or more."
            )
        if self.out_of_frame not in ("clip", "reject"):
            raise ConfigError(
                f"ingest.crop.out_of_frame={self.out_of_frame!r} is not valid; use 'clip' or 'reject'."
            )
        if self.image_format not in ("png", "jpg"):
            raise ConfigError(
                f"ingest.crop.image_format={self.image_format!r} is not valid; use 'png' or 'jpg'."
            )


@dataclass
class VideoResult:
    """Manifest rows and counts of one video, or the error that stopped it."""

    video: VideoFile
    rows: list[dict[str, Any]] = field(default_factory=list)
    frames_read: int = 0
    frames_kept: int = 0
    empty_frames: int = 0
    crops: int = 0
    error: str | None = None
    reused: bool = False


@dataclass
class PrepareResult:
    """The outcome of ``prepare_videos``.

    Attributes:
        manifest_path: ``<dataset_dir>/manifest.csv``.
        manifest: its rows, paths relative to ``dataset_dir``.
        summary: one row per class (and a ``total`` row) with videos, failed, frames_read,
            frames_kept, empty_frames and crops.
        failures: ``(video path, reason)`` for each video that could not be processed.
    """

    manifest_path: Path
    manifest: pd.DataFrame
    summary: pd.DataFrame
    failures: list[tuple[str, str]]


def prepare(cfg: DictConfig) -> PrepareResult:
    """Run ``prepare_videos`` with a composed ``prepare.yaml`` config.

    Raises:
        ConfigError: ``input_dir`` is not set.
        DataError: some videos failed and ``allow_failures`` is false; the crops and manifest of
            the other videos are written first.
    """
    if OmegaConf.is_missing(cfg, "input_dir"):
        raise ConfigError(
            "input_dir is missing. Pass the folder with one sub-folder of videos per species, "
            "for example `python prepare.py input_dir=videos/`."
        )
    ingest = OmegaConf.to_container(cfg.ingest, resolve=True)
    result = prepare_videos(
        cfg.input_dir,
        cfg.dataset_dir,
        annotations=cfg.get("annotations"),
        progress=cfg.get("progress", True),
        **ingest,
    )
    if result.failures and not cfg.get("allow_failures", False):
        raise DataError(
            f"{len(result.failures)} video(s) failed; the crops of the others are in "
            f"{result.manifest_path}. Fix or remove the failed videos, or set allow_failures=true "
            f"to accept the manifest without them. Failed: {_failure_listing(result.failures)}"
        )
    return result


def prepare_videos(
    input_dir: str | Path,
    dataset_dir: str | Path,
    annotations: str | Path | None = None,
    annotation_format: str = "auto",
    frames: Mapping[str, Any] | None = None,
    detector: Mapping[str, Any] | None = None,
    crop: Mapping[str, Any] | None = None,
    label_from: str = "folder",
    video_suffixes: Sequence[str] = VIDEO_SUFFIXES,
    progress: bool = True,
) -> PrepareResult:
    """Turn ``<input_dir>/<species>/<video>`` files into crops and a manifest in ``dataset_dir``.

    Args:
        input_dir: one sub-folder per species holding its videos.
        dataset_dir: output folder (layout in the module docstring).
        annotations: a CSV file or YOLO folder with the fish boxes; without it the motion
            detector finds them.
        annotation_format: ``auto``, ``csv`` or ``yolo``.
        frames: keyword arguments of ``FrameSelector``.
        detector: keyword arguments of ``MotionDetector``.
        crop: keyword arguments of ``CropSettings``.
        label_from: ``folder`` labels every crop with its species folder; ``annotation`` uses
            an annotation's label where it has one.
        video_suffixes: file endings that count as videos.
        progress: show a progress bar over the videos.

    A video that cannot be read is logged and listed in ``failures``; the others go on.

    Raises:
        ConfigError: a setting is invalid.
        DataError: the input folder contains no videos, the annotations are invalid, or no
            video gave a single crop.
    """
    if label_from not in ("folder", "annotation"):
        raise ConfigError(
            f"ingest.label_from={label_from!r} is not valid; use 'folder' or 'annotation'."
        )
    selector = FrameSelector(**(frames or {}))
    crop_settings = CropSettings(**(crop or {}))
    dataset_dir = Path(dataset_dir).expanduser()
    videos = find_videos(input_dir, tuple(video_suffixes))

    annotation_set = load_annotations(annotations, annotation_format) if annotations else None
    matched = annotation_set.match(videos) if annotation_set is not None else {}
    motion = MotionDetector(**(detector or {})) if annotation_set is None else None
    settings = {
        "version": RECORD_VERSION,
        "frames": _public_settings(selector),
        "detector": _public_settings(motion) if motion is not None else None,
        "crop": asdict(crop_settings),
        "label_from": label_from,
    }
    log.info(
        "Preparing %d videos from '%s' into '%s'; boxes from %s",
        len(videos),
        input_dir,
        dataset_dir,
        annotations if annotation_set is not None else "the motion detector",
    )

    results: list[VideoResult] = []
    with logging_redirect_tqdm():
        bar = tqdm(videos, desc="Videos", unit="video", disable=not progress, dynamic_ncols=True)
        for video in bar:
            video_annotations = matched.get(video.video_id)
            if annotation_set is not None and video_annotations is None:
                log.warning(
                    "Video '%s' has no annotations in '%s'; it gives no crops.",
                    video.path,
                    annotation_set.source,
                )
            result = _prepare_one(
                video,
                video_annotations,
                selector,
                motion,
                crop_settings,
                label_from,
                dataset_dir,
                settings,
            )
            results.append(result)
            bar.set_postfix(crops=sum(r.crops for r in results), failed=_count_failed(results))

    return _write_outputs(results, dataset_dir)


def _prepare_one(
    video: VideoFile,
    annotations: VideoAnnotations | None,
    selector: FrameSelector,
    motion: MotionDetector | None,
    crop_settings: CropSettings,
    label_from: str,
    dataset_dir: Path,
    settings: dict[str, Any],
) -> VideoResult:
    """Process one video, or reuse its record from an earlier run with the same inputs."""
    record_path = dataset_dir / "videos" / f"{video.video_id}.json"
    try:
        fingerprint = _fingerprint(video, annotations, settings)
        reused = _read_record(record_path, fingerprint, video, dataset_dir)
        if reused is not None:
            return reused
        result = _extract_crops(
            video, annotations, selector, motion, crop_settings, label_from, dataset_dir
        )
        _write_record(record_path, fingerprint, result)
        return result
    except (DataError, cv2.error, OSError) as error:
        log.error("Video '%s' failed: %s", video.path, error)
        shutil.rmtree(dataset_dir / "images" / video.video_id, ignore_errors=True)
        return VideoResult(video, error=str(error))


def _extract_crops(
    video: VideoFile,
    annotations: VideoAnnotations | None,
    selector: FrameSelector,
    motion: MotionDetector | None,
    crop_settings: CropSettings,
    label_from: str,
    dataset_dir: Path,
) -> VideoResult:
    image_dir = dataset_dir / "images" / video.video_id
    if image_dir.exists():
        shutil.rmtree(image_dir)
    image_dir.mkdir(parents=True)
    selector.reset()
    if motion is not None:
        motion.reset()

    result = VideoResult(video)
    box_problems: list[str] = []
    for index, frame in enumerate(read_frames(video.path)):
        result.frames_read += 1
        # The detector gets every frame, kept or not, so its background model stays current.
        detected = motion(frame) if motion is not None else None
        if not selector.keep(index, frame):
            continue
        result.frames_kept += 1
        if annotations is not None:
            boxes = annotations.frames.get(index)
            if boxes is None:
                continue
        else:
            boxes = [detected] if detected is not None else []
        rows = _crop_boxes(
            frame, index, boxes, video, crop_settings, label_from, dataset_dir, box_problems
        )
        result.rows.extend(rows)
        result.crops += len(rows)
        if not rows:
            result.empty_frames += 1

    if result.frames_read == 0:
        raise DataError(
            f"Video '{video.path}' has no frames: OpenCV opened it but decoded none. "
            "Re-encode or remove it."
        )
    _report_video(video, annotations, result, box_problems, crop_settings)
    return result


def _crop_boxes(
    frame: np.ndarray,
    index: int,
    boxes: list[Box],
    video: VideoFile,
    crop_settings: CropSettings,
    label_from: str,
    dataset_dir: Path,
    box_problems: list[str],
) -> list[dict[str, Any]]:
    """Write the crops of one kept frame; return their manifest rows."""
    height, width = frame.shape[:2]
    rows: list[dict[str, Any]] = []
    for box in boxes:
        fitted = _fit_box(
            box.to_pixels(width, height), width, height, crop_settings, box_problems, index
        )
        if fitted is None:
            continue
        region = crop_region(fitted, width, height, crop_settings.square, crop_settings.margin)
        name = f"frame{index:06d}_{len(rows)}.{crop_settings.image_format}"
        relative = Path("images") / video.video_id / name
        if not cv2.imwrite(str(dataset_dir / relative), cut(frame, region)):
            raise OSError(f"OpenCV could not write the crop '{dataset_dir / relative}'.")
        label = fitted.label if label_from == "annotation" and fitted.label else video.label
        rows.append(
            {
                "path": relative.as_posix(),
                "label": label,
                "video": video.video_id,
                "track": fitted.track or DEFAULT_TRACK,
                "frame": index,
                "x": round(fitted.x),
                "y": round(fitted.y),
                "w": round(fitted.w),
                "h": round(fitted.h),
            }
        )
    return rows


def _fit_box(
    box: Box, width: int, height: int, settings: CropSettings, problems: list[str], index: int
) -> Box | None:
    """Apply the out-of-frame policy and the minimum size; note why a box changed or was dropped."""
    if not is_inside(box, width, height):
        clipped = clip_box(box, width, height)
        where = f"frame {index} box ({box.x:g}, {box.y:g}, {box.w:g}, {box.h:g})"
        if clipped is None:
            problems.append(f"{where} lies entirely outside the frame: dropped")
            return None
        if settings.out_of_frame == "reject":
            problems.append(f"{where} reaches past the frame edge: rejected")
            return None
        problems.append(f"{where} reaches past the frame edge: clipped")
        box = clipped
    if box.w < settings.min_size or box.h < settings.min_size:
        return None
    return box


def _report_video(
    video: VideoFile,
    annotations: VideoAnnotations | None,
    result: VideoResult,
    box_problems: list[str],
    settings: CropSettings,
) -> None:
    if annotations is not None:
        late = sorted(frame for frame in annotations.frames if frame >= result.frames_read)
        if late:
            log.warning(
                "Annotations in '%s' for video '%s' name frame(s) %s past its end: the video "
                "has %d frames (0 to %d). Those boxes are ignored.",
                annotations.source,
                video.path,
                late[:10],
                result.frames_read,
                result.frames_read - 1,
            )
    if box_problems:
        log.warning(
            "%d box(es) in '%s' for video '%s' reach past the frame edge "
            "(ingest.crop.out_of_frame=%s): %s",
            len(box_problems),
            annotations.source if annotations is not None else "the motion detector",
            video.path,
            settings.out_of_frame,
            "; ".join(box_problems[:3]) + ("; ..." if len(box_problems) > 3 else ""),
        )
    claimed = header_frame_count(video.path)
    if claimed is not None and claimed != result.frames_read:
        log.debug(
            "Video '%s': the header claims %d frames, %d were decoded.",
            video.path,
            claimed,
            result.frames_read,
        )


def _fingerprint(
    video: VideoFile, annotations: VideoAnnotations | None, settings: dict[str, Any]
) -> str:
    stat = video.path.stat()
    frames = None
    if annotations is not None:
        frames = {str(k): [asdict(b) for b in v] for k, v in sorted(annotations.frames.items())}
    payload = {
        "settings": settings,
        "video": [str(video.path.resolve()), stat.st_size, stat.st_mtime_ns],
        "annotations": frames,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _read_record(
    path: Path, fingerprint: str, video: VideoFile, dataset_dir: Path
) -> VideoResult | None:
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        log.warning("Record '%s' is unreadable; the video is processed again.", path)
        return None
    if record.get("fingerprint") != fingerprint:
        return None
    if not all((dataset_dir / row["path"]).is_file() for row in record["rows"]):
        log.warning("Crops of '%s' are missing; the video is processed again.", video.path)
        return None
    counts = {key: int(record["counts"][key]) for key in SUMMARY_COUNTS}
    return VideoResult(video, rows=record["rows"], reused=True, **counts)


def _write_record(path: Path, fingerprint: str, result: VideoResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "fingerprint": fingerprint,
        "video": str(result.video.path),
        "counts": {key: getattr(result, key) for key in SUMMARY_COUNTS},
        "rows": result.rows,
    }
    _atomic_write_text(path, json.dumps(record, indent=1))


def _write_outputs(results: list[VideoResult], dataset_dir: Path) -> PrepareResult:
    dataset_dir.mkdir(parents=True, exist_ok=True)
    rows = [row for result in results if result.error is None for row in result.rows]
    manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    manifest = manifest.sort_values(["video", "frame", "path"], kind="stable").reset_index(
        drop=True
    )
    manifest_path = dataset_dir / "manifest.csv"
    _atomic_write_text(manifest_path, manifest.to_csv(index=False))

    failures = [(str(r.video.path), r.error) for r in results if r.error is not None]
    failed_path = dataset_dir / "failed_videos.csv"
    if failures:
        pd.DataFrame(failures, columns=["path", "error"]).to_csv(failed_path, index=False)
        log.error(
            "%d of %d videos failed and are listed in %s: %s",
            len(failures),
            len(results),
            failed_path,
            _failure_listing(failures),
        )
    elif failed_path.exists():
        failed_path.unlink()

    summary = _summarise(results)
    summary.to_csv(dataset_dir / "summary.csv")
    reused = sum(r.reused for r in results)
    log.info(
        "Prepared %d crops from %d videos (%d reused from an earlier run) into %s\n%s",
        len(manifest),
        len(results) - len(failures),
        reused,
        manifest_path,
        summary.to_string(),
    )
    if manifest.empty:
        if len(failures) == len(results):
            reason = f"every video failed. {_failure_listing(failures)}"
        else:
            reason = (
                "no kept frame had a fish box. Check the annotations, or lower "
                "ingest.detector.min_area and ingest.frames.threshold."
            )
        raise DataError(f"No crops were written to '{dataset_dir}': {reason}")
    return PrepareResult(manifest_path, manifest, summary, failures)


def _summarise(results: list[VideoResult]) -> pd.DataFrame:
    records = [
        {
            "label": r.video.label,
            "videos": 1,
            "failed": int(r.error is not None),
            **{key: getattr(r, key) for key in SUMMARY_COUNTS},
        }
        for r in results
    ]
    summary = pd.DataFrame(records).groupby("label").sum()
    summary.loc["total"] = summary.sum()
    return summary


def _public_settings(component: object) -> dict[str, Any]:
    """Return the plain public attributes of a component, the settings that shape its output."""
    return {
        key: value
        for key, value in vars(component).items()
        if not key.startswith("_") and isinstance(value, (bool, int, float, str, type(None)))
    }


def _count_failed(results: list[VideoResult]) -> int:
    return sum(r.error is not None for r in results)


def _failure_listing(failures: list[tuple[str, str]], limit: int = 5) -> str:
    listing = "; ".join(f"{path}: {reason}" for path, reason in failures[:limit])
    if len(failures) > limit:
        listing += f"; and {len(failures) - limit} more"
    return listing


def _atomic_write_text(path: Path, text: str) -> None:
    """Write a file through a temporary name, so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(text)
    temporary.replace(path)
