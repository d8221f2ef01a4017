"""Sequential video decoding with OpenCV.

Container headers of fish-counter recordings are often wrong (a frame count written before the
recording stopped, a broken index), and seeking in compressed streams can land on a different
frame than asked for. So frames are only ever decoded one after another from the start, until
the decoder reports the end of the stream.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from fishaug.errors import DataError

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov")

# FourCC codes that opencv-python-headless 5.1 writes and reads back through its FFmpeg build.
# H.264 ("avc1") is missing there, so .mp4 and .mov use MPEG-4 Part 2.
FOURCC_BY_SUFFIX = {".avi": "MJPG", ".mkv": "MJPG", ".mp4": "mp4v", ".mov": "mp4v"}


def read_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Yield every frame of a video in stream order, until the decoder reports the end.

    Frame ``i`` of the iteration is the video's frame index ``i`` (0-based), the numbering used
    by annotation files. The container's frame count is never consulted and nothing is seeked.

    Yields:
        BGR frames as uint8 arrays of shape (height, width, 3).

    Raises:
        DataError: the file does not exist or OpenCV cannot open it (not a video, or corrupt).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Video not found: '{path}'.")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise DataError(
            f"Could not open video '{path}': it is corrupt or in a format that OpenCV's FFmpeg "
            "build cannot decode. Re-encode it (for example MJPG in .avi) or remove it."
        )
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            if frame.ndim == 2:
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
            yield frame
    finally:
        capture.release()


def header_frame_count(path: str | Path) -> int | None:
    """Return the frame count that the container claims, or None when it states none.

    Only for log messages that compare the claim with the frames actually decoded.
    """
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            return None
        count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    finally:
        capture.release()
    return int(count) if count > 0 else None


def write_video(path: str | Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    """Write BGR uint8 frames of one size to a video file; the codec follows the file suffix.

    ``.avi`` and ``.mkv`` get Motion JPEG, ``.mp4`` and ``.mov`` get MPEG-4 Part 2.

    Raises:
        ValueError: ``frames`` is empty, the frames differ in size, or the suffix is not one of
            ``VIDEO_SUFFIXES``.
        OSError: OpenCV cannot open a writer for the file.
    """
    path = Path(path)
    fourcc = FOURCC_BY_SUFFIX.get(path.suffix.lower())
    if fourcc is None:
        raise ValueError(
            f"Cannot write video '{path}': the suffix must be one of {list(VIDEO_SUFFIXES)}."
        )
    if not frames:
        raise ValueError(f"Cannot write video '{path}' without frames.")
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV could not open a {fourcc} video writer for '{path}'.")
    try:
        for index, frame in enumerate(frames):
            if frame.shape[:2] != (height, width):
                raise ValueError(
                    f"Frame {index} of '{path}' is {frame.shape[1]}x{frame.shape[0]}, "
                    f"but the video is {width}x{height}."
                )
            writer.write(np.ascontiguousarray(frame, dtype=np.uint8))
    finally:
        writer.release()
    return path
