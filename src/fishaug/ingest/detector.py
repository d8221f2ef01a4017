"""A motion-based fish detector for videos without annotations.

A fish-counter camera looks at a fixed window, so whatever moves is most likely the fish. The
detector keeps a background model (OpenCV's MOG2 Gaussian mixture, Zivkovic 2004, "Improved
adaptive Gaussian mixture model for background subtraction") and returns the bounding box of the
largest foreground blob of each frame.
"""

from __future__ import annotations

import cv2
import numpy as np

from fishaug.errors import ConfigError
from fishaug.ingest.annotations import Box


class MotionDetector:
    """Find the largest moving blob of each frame of one video.

    Feed it every frame of a video in stream order, including frames that are not kept, so that
    the background model follows the scene.

    Args:
        history: frames that the background model remembers.
        var_threshold: squared Mahalanobis distance above which a pixel is foreground (MOG2's
            ``varThreshold``); raise it for noisy videos.
        min_area: smallest blob, as a fraction (0 to 1) of the frame area, counted as a fish.
        learning_rate: how fast the background model adapts after the warm-up (0 to 1). A slow
            rate keeps a slow or resting fish from fading into the background.
        warmup: frames at the start of a video that only train the background model, at
            OpenCV's automatic learning rate.
        kernel_size: size in pixels of the morphological opening (removes speckles) and
            closing (joins the parts of one fish) of the foreground mask.

    Raises:
        ConfigError: an argument is out of range.

    NOTE: a fish already in view at the first frame becomes part of the background model, so the
    area it uncovers shows as foreground until the model adapts to it.
    """

    def __init__(
        self,
        history: int = 100,
        var_threshold: float = 25.0,
        min_area: float = 0.002,
        learning_rate: float = 0.005,
        warmup: int = 2,
        kernel_size: int = 5,
    ):
        if history < 1:
            raise ConfigError(f"ingest.detector.history={history} is out of range; use 1 or more.")
        if var_threshold <= 0:
            raise ConfigError(
                f"ingest.detector.var_threshold={var_threshold} is out of range; use a value above 0."
            )
        if not 0 <= min_area < 1:
            raise ConfigError(
                f"ingest.detector.min_area={min_area} is out of range; use a fraction 0 <= a < 1 "
                "of the frame area."
            )
        if not 0 <= learning_rate <= 1:
            raise ConfigError(
                f"ingest.detector.learning_rate={learning_rate} is out of range; use 0 to 1."
            )
        if warmup < 0:
            raise ConfigError(f"ingest.detector.warmup={warmup} is out of range; use 0 or more.")
        if kernel_size < 1:
            raise ConfigError(
                f"ingest.detector.kernel_size={kernel_size} is out of range; use 1 or more pixels."
            )
        self.history = history
        self.var_threshold = var_threshold
        self.min_area = min_area
        self.learning_rate = learning_rate
        self.warmup = warmup
        self.kernel_size = kernel_size
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel_size, kernel_size))
        self.reset()

    def reset(self) -> None:
        """Start a new background model; call before the first frame of the next video."""
        self._subtractor = cv2.createBackgroundSubtractorMOG2(
            history=self.history, varThreshold=self.var_threshold, detectShadows=False
        )
        self._frames_seen = 0

    def foreground(self, frame: np.ndarray) -> np.ndarray:
        """Update the background model with a BGR frame and return its cleaned foreground mask.

        Returns:
            uint8 mask of shape (height, width), 255 on foreground pixels.
        """
        # -1 is OpenCV's automatic rate, 1 / (frames seen), which learns the first frames fast.
        rate = -1.0 if self._frames_seen < self.warmup else self.learning_rate
        mask = self._subtractor.apply(frame, learningRate=rate)
        self._frames_seen += 1
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self._kernel)
        return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, self._kernel, iterations=2)

    def __call__(self, frame: np.ndarray) -> Box | None:
        """Update the model with a BGR uint8 frame; return the box of its largest blob, if any.

        Returns None during the warm-up frames and when no blob reaches ``min_area``.
        """
        mask = self.foreground(frame)
        if self._frames_seen <= self.warmup:
            return None
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if not contours:
            return None
        largest = max(contours, key=cv2.contourArea)
        height, width = mask.shape
        if cv2.contourArea(largest) < self.min_area * width * height:
            return None
        x, y, w, h = cv2.boundingRect(largest)
        return Box(float(x), float(y), float(w), float(h))
