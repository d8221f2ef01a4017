"""Rendering simulated fish-counter videos and their ground-truth boxes.

One video shows one fish passing the viewing window, as a fish counter records one clip per
passing fish: empty frames, the fish swimming through (sometimes resting on the way), empty
frames again. The boxes are written in the CSV annotation format that ``prepare`` reads.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from fishaug.errors import ConfigError
from fishaug.ingest.video import FOURCC_BY_SUFFIX, write_video
from fishaug.sim.scene import (
    Conditions,
    check_probabilities,
    finish_frame,
    make_scene,
    sample_conditions,
)
from fishaug.sim.species import FishSprite, SpeciesLook, get_species

log = logging.getLogger(__name__)

ANNOTATION_COLUMNS = ("video", "frame", "x", "y", "w", "h", "label", "track")


@dataclass(frozen=True)
class SimResult:
    """Files written by ``simulate_counter``.

    Attributes:
        videos_dir: ``<out_dir>/videos``, one folder per species.
        annotations: ``<out_dir>/annotations.csv``, the boxes of every frame.
        videos_table: ``<out_dir>/videos.csv``, the conditions drawn for each video.
    """

    videos_dir: Path
    annotations: Path
    videos_table: Path


def simulate_counter(
    out_dir: str | Path,
    species: list[str] | tuple[str, ...],
    videos_per_species: int = 8,
    frames_per_video: int = 18,
    width: int = 160,
    height: int = 120,
    fps: float = 10.0,
    seed: int = 0,
    conditions: Mapping[str, float] | None = None,
    video_format: str = "avi",
    progress: bool = True,
) -> SimResult:
    """Write simulated fish-counter videos, their boxes and their conditions.

    Layout: ``<out_dir>/videos/<species>/video_<k>.<video_format>``, ``annotations.csv``
    (video, frame, x, y, w, h, label, track; an empty box marks a frame without fish) and
    ``videos.csv``. Every video has its own random stream derived from ``seed``, the species
    name and the video number, so the output is the same for the same arguments.

    Args:
        species: names from ``fishaug.sim.species.SPECIES``.
        frames_per_video: frames of each video, fish and empty ones together.
        width, height: size of the rendered frames in pixels; low-resolution videos are
            written smaller.
        conditions: probability (0 to 1) of each condition in ``fishaug.sim.scene.CONDITIONS``.
        video_format: ``avi`` or ``mkv`` (Motion JPEG), ``mp4`` or ``mov`` (MPEG-4 Part 2).

    Raises:
        ConfigError: an argument is out of range or names an unknown species or condition.
    """
    looks = get_species(species)
    probabilities = check_probabilities(conditions or {})
    _check_sizes(videos_per_species, frames_per_video, width, height, fps, video_format)

    out_dir = Path(out_dir)
    videos_dir = out_dir / "videos"
    boxes: list[dict] = []
    table: list[dict] = []
    jobs = [(look, k) for look in looks for k in range(videos_per_species)]
    for look, k in tqdm(jobs, desc="Simulating videos", unit="video", disable=not progress):
        rng = np.random.default_rng([seed, zlib.crc32(look.name.encode()), k])
        stem = f"video_{k:02d}"
        drawn = sample_conditions(rng, probabilities)
        frames, video_boxes = render_video(look, drawn, frames_per_video, width, height, rng)
        folder = videos_dir / look.name
        folder.mkdir(parents=True, exist_ok=True)
        write_video(folder / f"{stem}.{video_format}", frames, fps=fps)

        video = f"{look.name}/{stem}"
        for index, box in enumerate(video_boxes):
            row = {"video": video, "frame": index, "label": look.name, "track": "fish1"}
            row.update(dict(zip("xywh", box, strict=True)) if box is not None else {})
            boxes.append(row)
        fish_frames = sum(box is not None for box in video_boxes)
        table.append(
            {
                "video": video,
                "label": look.name,
                "conditions": " ".join(drawn.names),
                "fish_frames": fish_frames,
                **asdict(drawn),
            }
        )

    annotations = out_dir / "annotations.csv"
    pd.DataFrame(boxes, columns=list(ANNOTATION_COLUMNS)).to_csv(annotations, index=False)
    videos_table = out_dir / "videos.csv"
    pd.DataFrame(table).drop(columns="names").to_csv(videos_table, index=False)
    log.info(
        "Simulated %d videos of %d species (%d frames each) in %s",
        len(jobs),
        len(looks),
        frames_per_video,
        videos_dir,
    )
    return SimResult(videos_dir, annotations, videos_table)


def render_video(
    look: SpeciesLook,
    conditions: Conditions,
    frames: int,
    width: int,
    height: int,
    rng: np.random.Generator,
) -> tuple[list[np.ndarray], list[tuple[int, int, int, int] | None]]:
    """Render one fish passing the window.

    Returns:
        The frames (uint8 BGR, scaled by ``conditions.scale``) and, per frame, the box
        ``(x, y, w, h)`` of the visible part of the fish in pixels of the written frame, or
        None where no fish is visible.
    """
    scene = make_scene(width, height, conditions, rng)
    sprite = FishSprite(look, look.length * width * rng.uniform(0.85, 1.15), rng)
    tilt = rng.uniform(-6.0, 6.0)
    direction = 1 if rng.random() < 0.5 else -1
    positions = _swim_path(sprite.output_size, frames, width, height, conditions, rng)
    phase = rng.uniform(0, 2 * math.pi)
    # Fish fade into turbid water with distance, so their colours move towards the water's.
    fade = 0.6 * conditions.turbidity

    out_frames: list[np.ndarray] = []
    out_boxes: list[tuple[int, int, int, int] | None] = []
    for position in positions:
        frame = scene.background.copy()
        box = None
        if position is not None:
            x, y, speed = position
            phase += 0.5 + 0.7 * speed
            rgb, alpha = _posed(sprite, phase, tilt, direction)
            rgb = rgb * (1 - fade) + scene.water * fade
            box = _paste(frame, rgb, alpha, round(x), round(y))
        out_frames.append(finish_frame(frame, scene, conditions, rng))
        out_boxes.append(_scale_box(box, conditions.scale, out_frames[-1].shape))
    return out_frames, out_boxes


def _swim_path(
    sprite_size: tuple[int, int],
    frames: int,
    width: int,
    height: int,
    conditions: Conditions,
    rng: np.random.Generator,
) -> list[tuple[float, float, float] | None]:
    """Top-left corner and speed (relative to the mean) of the sprite per frame; None: no fish."""
    sprite_w, sprite_h = sprite_size
    empty = min(frames - 2, round(conditions.empty * frames))
    lead_in = 1 + int(rng.integers(0, max(1, empty)))
    fish_frames = frames - max(empty, lead_in)

    # Speed along the path, with a rest of a few frames in about half of the passages.
    speed = rng.uniform(0.7, 1.3, size=fish_frames)
    if rng.random() < 0.5 and fish_frames >= 6:
        start = int(rng.integers(1, fish_frames - 3))
        length = max(2, round(fish_frames * rng.uniform(0.15, 0.3)))
        speed[start : start + length] = 0.08
    progress = np.cumsum(speed) - speed[0]
    progress = progress / max(progress[-1], 1e-6)
    x = -0.9 * sprite_w + progress * (width + 0.8 * sprite_w)

    if conditions.cut > 0:
        top = rng.random() < 0.5
        y0 = -conditions.cut * sprite_h if top else height - (1 - conditions.cut) * sprite_h
        y = np.full(fish_frames, y0)
    else:
        centre = rng.uniform(0.3, 0.7) * height
        drift = rng.uniform(-0.15, 0.15) * height * (progress - 0.5)
        wobble = rng.uniform(0.5, 2.5) * np.sin(np.arange(fish_frames) * rng.uniform(0.3, 0.8))
        y = centre + drift + wobble - sprite_h / 2

    relative_speed = speed / speed.mean()
    path: list[tuple[float, float, float] | None] = [None] * frames
    for i in range(fish_frames):
        path[lead_in + i] = (float(x[i]), float(y[i]), float(relative_speed[i]))
    return path


def _posed(
    sprite: FishSprite, phase: float, tilt: float, direction: int
) -> tuple[np.ndarray, np.ndarray]:
    rgb, alpha = sprite.render(phase)
    if direction < 0:
        rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
    height, width = alpha.shape
    rotation = cv2.getRotationMatrix2D((width / 2, height / 2), tilt * direction, 1.0)
    rgb = cv2.warpAffine(
        np.ascontiguousarray(rgb), rotation, (width, height), flags=cv2.INTER_LINEAR
    )
    alpha = cv2.warpAffine(
        np.ascontiguousarray(alpha), rotation, (width, height), flags=cv2.INTER_LINEAR
    )
    return rgb, alpha


def _paste(
    frame: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, x: int, y: int
) -> tuple[int, int, int, int] | None:
    """Blend a sprite into the frame at top-left (x, y); return the visible fish's box or None."""
    height, width = frame.shape[:2]
    sprite_h, sprite_w = alpha.shape
    fx0, fy0 = max(x, 0), max(y, 0)
    fx1, fy1 = min(x + sprite_w, width), min(y + sprite_h, height)
    if fx1 <= fx0 or fy1 <= fy0:
        return None
    sx0, sy0 = fx0 - x, fy0 - y
    sx1, sy1 = sx0 + (fx1 - fx0), sy0 + (fy1 - fy0)
    a = alpha[sy0:sy1, sx0:sx1, None]
    region = frame[fy0:fy1, fx0:fx1]
    region[:] = region * (1 - a) + rgb[sy0:sy1, sx0:sx1] * a

    visible = a[..., 0] > 0.5
    if not visible.any():
        return None
    rows = np.flatnonzero(visible.any(axis=1))
    cols = np.flatnonzero(visible.any(axis=0))
    return (
        fx0 + int(cols[0]),
        fy0 + int(rows[0]),
        int(cols[-1] - cols[0] + 1),
        int(rows[-1] - rows[0] + 1),
    )


def _scale_box(
    box: tuple[int, int, int, int] | None, scale: float, shape: tuple[int, ...]
) -> tuple[int, int, int, int] | None:
    if box is None or scale == 1.0:
        return box
    height, width = shape[:2]
    x0, y0 = math.floor(box[0] * scale), math.floor(box[1] * scale)
    x1 = min(width, math.ceil((box[0] + box[2]) * scale))
    y1 = min(height, math.ceil((box[1] + box[3]) * scale))
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1 - x0, y1 - y0


def _check_sizes(
    videos_per_species: int,
    frames_per_video: int,
    width: int,
    height: int,
    fps: float,
    video_format: str,
) -> None:
    if videos_per_species < 1:
        raise ConfigError(
            f"dataset.videos_per_species={videos_per_species} is out of range; use 1 or more."
        )
    if frames_per_video < 8:
        raise ConfigError(
            f"dataset.frames_per_video={frames_per_video} is out of range; use 8 or more so a "
            "fish can pass the window."
        )
    if width < 32 or height < 32:
        raise ConfigError(
            f"dataset.width={width}, dataset.height={height} are too small; use 32 pixels or more."
        )
    if fps <= 0:
        raise ConfigError(f"dataset.fps={fps} is out of range; use a value above 0.")
    if f".{video_format}" not in FOURCC_BY_SUFFIX:
        raise ConfigError(
            f"dataset.video_format={video_format!r} is not valid; use one of "
            f"{sorted(s.lstrip('.') for s in FOURCC_BY_SUFFIX)}."
        )
