"""Image quality scores that rank candidate fine-tuning images: sharpness and exposure."""

from __future__ import annotations

import cv2
import numpy as np


def sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian of a grayscale image (H, W) uint8; higher is sharper.

    The Laplacian responds to edges, so a blurred or turbid image has a small variance.
    """
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def exposure(gray: np.ndarray, clip_low: int = 5, clip_high: int = 250) -> float:
    """Exposure score in [0, 1] of a grayscale image (H, W) uint8; 1 is mid-grey and unclipped.

    The score is ``1 - 2 * |mean / 255 - 0.5|`` times the fraction of pixels that are neither
    darker than ``clip_low`` nor brighter than ``clip_high``, so both dark underwater frames and
    blown-out ones rank low.
    """
    mean = float(gray.mean()) / 255.0
    unclipped = float(((gray > clip_low) & (gray < clip_high)).mean())
    return (1.0 - 2.0 * abs(mean - 0.5)) * unclipped
