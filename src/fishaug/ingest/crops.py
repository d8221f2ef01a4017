"""Cutting fish crops out of frames: boxes clipped to the frame, optional square crops."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from fishaug.ingest.annotations import Box

Region = tuple[int, int, int, int]


def is_inside(box: Box, width: int, height: int) -> bool:
    """Return whether a pixel box lies entirely within a ``width`` x ``height`` frame."""
    return box.x >= 0 and box.y >= 0 and box.x + box.w <= width and box.y + box.h <= height


def clip_box(box: Box, width: int, height: int) -> Box | None:
    """Return the part of a pixel box inside the frame, or None when nothing of it is inside."""
    x0, y0 = max(box.x, 0.0), max(box.y, 0.0)
    x1, y1 = min(box.x + box.w, float(width)), min(box.y + box.h, float(height))
    if x1 <= x0 or y1 <= y0:
        return None
    return replace(box, x=x0, y=y0, w=x1 - x0, h=y1 - y0)


def crop_region(
    box: Box, width: int, height: int, square: bool = False, margin: float = 0.0
) -> Region:
    """Return the pixel region ``(x0, y0, x1, y1)`` to cut for a box that lies in the frame.

    ``margin`` widens the box by that fraction of its width (and height) on each side. A plain
    region is clipped to the frame. A square region has the box's longest side (with margin)
    and is centred on the box, then shifted to lie within the frame. When the frame is smaller
    than the square, the square reaches past the frame edge and ``cut`` pads it.
    """
    if not square:
        x0 = max(0, math.floor(box.x - margin * box.w))
        y0 = max(0, math.floor(box.y - margin * box.h))
        x1 = min(width, math.ceil(box.x + box.w + margin * box.w))
        y1 = min(height, math.ceil(box.y + box.h + margin * box.h))
        return x0, y0, x1, y1

    side = max(1, math.ceil(max(box.w, box.h) * (1 + 2 * margin)))
    x0 = _square_start(box.x + box.w / 2, side, width)
    y0 = _square_start(box.y + box.h / 2, side, height)
    return x0, y0, x0 + side, y0 + side


def cut(frame: np.ndarray, region: Region) -> np.ndarray:
    """Copy a region out of a frame; parts outside the frame are black.

    Args:
        frame: array of shape (height, width, channels).
        region: ``(x0, y0, x1, y1)`` in pixels, end exclusive, possibly reaching past the frame.
    """
    x0, y0, x1, y1 = region
    height, width = frame.shape[:2]
    out = np.zeros((y1 - y0, x1 - x0, *frame.shape[2:]), dtype=frame.dtype)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x1, width), min(y1, height)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = frame[sy0:sy1, sx0:sx1]
    return out


def _square_start(centre: float, side: int, extent: int) -> int:
    start = round(centre - side / 2)
    if side <= extent:
        return min(max(start, 0), extent - side)
    return start
