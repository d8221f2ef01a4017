"""Frame selection: keep a frame only when it differs enough from the last kept frame.

Fish-counter clips hold long runs of near-identical frames (an empty window, a fish standing in
the current). Those add no information but would dominate the crops of a video, so a frame is
compared with the last frame that was kept and kept only when the difference exceeds a
threshold.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from fishaug.errors import ConfigError


def mean_abs_difference(difference: np.ndarray, pixel_delta: float) -> float:
    """Mean absolute grey-level difference, in grey levels from 0 to 255."""
    return float(np.mean(np.abs(difference)))


def changed_fraction(difference: np.ndarray, pixel_delta: float) -> float:
    """Fraction of pixels (0 to 1) whose grey level changed by more than ``pixel_delta``."""
    return float(np.mean(np.abs(difference) > pixel_delta))


def noise_level(difference: np.ndarray) -> float:
    """Estimate the noise standard deviation of a difference image from its median absolute value.

    For zero-mean Gaussian noise the median of ``|d|`` is 0.6745 standard deviations. A fish
    changes far fewer than half of the pixels, so the median measures only noise.
    """
    return float(np.median(np.abs(difference))) / 0.6745


# Each metric takes the difference of two prepared grey frames (float32) and the grey-level
# change that counts a pixel as changed.
METRICS: dict[str, Callable[[np.ndarray, float], float]] = {
    "changed_fraction": changed_fraction,
    "mean_abs": mean_abs_difference,
}


class FrameSelector:
    """Decide frame by frame, in stream order, which frames of one video to keep.

    Frames are compared in grey levels after scaling the longest side down to ``compare_size``
    and a 5x5 Gaussian blur, so sensor noise and compression artefacts count less than a
    moving fish.

    Args:
        metric: ``changed_fraction`` (share of pixels that changed by more than
            ``pixel_delta`` grey levels, 0 to 1) or ``mean_abs`` (mean absolute difference in
            grey levels, 0 to 255).
        threshold: a frame is kept when its difference from the last kept frame is greater
            than this; None keeps every candidate frame. The first candidate is always kept.
        pixel_delta: smallest grey-level change that counts a pixel as changed
            (``changed_fraction``).
        noise_factor: a pixel counts as changed only when its change also exceeds this many
            times the noise level estimated from the two frames, so noisy videos need larger
            changes than clean ones (``changed_fraction``; 0 turns it off).
        every_n: only frames whose index is a multiple of ``every_n`` are candidates.
        compare_size: maximum side length, in pixels, of the frames as compared.

    Raises:
        ConfigError: an argument is out of range or ``metric`` is unknown.
    """

    def __init__(
        self,
        metric: str = "changed_fraction",
        threshold: float | None = 0.01,
        pixel_delta: float = 4.0,
        noise_factor: float = 3.0,
        every_n: int = 1,
        compare_size: int = 128,
    ):
        if metric not in METRICS:
            raise ConfigError(
                f"ingest.frames.metric={metric!r} is not valid; use one of {sorted(METRICS)}."
            )
        if threshold is not None and threshold < 0:
            raise ConfigError(
                f"ingest.frames.threshold={threshold} is out of range; use 0 or more, or null "
                "to keep every frame."
            )
        if pixel_delta < 0:
            raise ConfigError(
                f"ingest.frames.pixel_delta={pixel_delta} is out of range; use 0 or more."
            )
        if noise_factor < 0:
            raise ConfigError(
                f"ingest.frames.noise_factor={noise_factor} is out of range; use 0 or more."
            )
        if every_n < 1:
            raise ConfigError(f"ingest.frames.every_n={every_n} is out of range; use 1 or more.")
        if compare_size < 8:
            raise ConfigError(
                f"ingest.frames.compare_size={compare_size} is out of range; use 8 or more pixels."
            )
        self.metric = metric
        self.threshold = threshold
        self.pixel_delta = pixel_delta
        self.noise_factor = noise_factor
        self.every_n = every_n
        self.compare_size = compare_size
        self._last_kept: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the last kept frame; call before the first frame of the next video."""
        self._last_kept = None

    def prepare(self, frame: np.ndarray) -> np.ndarray:
        """Convert a BGR or grey uint8 frame to the blurred float32 grey image that is compared."""
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
        height, width = grey.shape
        scale = self.compare_size / max(height, width)
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
        return cv2.GaussianBlur(grey.astype(np.float32), (5, 5), 0)

    def difference(self, a: np.ndarray, b: np.ndarray) -> float:
        """Return the configured metric between two prepared frames."""
        difference = a - b
        pixel_delta = self.pixel_delta
        if self.metric == "changed_fraction" and self.noise_factor > 0:
            pixel_delta = max(pixel_delta, self.noise_factor * noise_level(difference))
        return METRICS[self.metric](difference, pixel_delta)

    def keep(self, index: int, frame: np.ndarray) -> bool:
        """Return whether frame ``index`` is kept, and remember it as the last kept frame if so.

        Frames must come in stream order, each video starting after ``reset()``.
        """
        if index % self.every_n != 0:
            return False
        if self.threshold is None:
            return True
        prepared = self.prepare(frame)
        last = self._last_kept
        # A frame whose size differs from the last kept one (a broken stream) counts as changed.
        same_size = last is not None and last.shape == prepared.shape
        if same_size and self.difference(prepared, last) <= self.threshold:
            return False
        self._last_kept = prepared
        return True
