"""Image transforms shared by every split: letterbox, crop, tensor conversion, normalisation."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from fishaug.errors import ConfigError

log = logging.getLogger(__name__)

ImageTransform = Callable[[Image.Image], Image.Image]


def load_rgb(path: str) -> Image.Image:
    """Open an image as 8-bit RGB; grayscale, palette, 16-bit and RGBA images are converted."""
    with Image.open(path) as image:
        if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
            # Transparent pixels become black, the letterbox padding colour, not random values.
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            array = np.asarray(image, dtype=np.float64)
            scale = 255.0 / max(float(array.max()), 1.0)
            return Image.fromarray((array * scale).astype(np.uint8)).convert("RGB")
        return image.convert("RGB")


class Letterbox:
    """Scale the longest side to ``size`` and pad with black to a ``size`` x ``size`` square.

    The aspect ratio is kept, because a fish's body proportions are a species cue that stretching
    would distort. The image is centred; the padding splits evenly, the odd pixel going right or
    bottom.
    """

    def __init__(self, size: int, interpolation: Image.Resampling = Image.Resampling.BILINEAR):
        if size < 8:
            raise ConfigError(f"data.image_size={size} is too small; use 8 or more pixels.")
        self.size = size
        self.interpolation = interpolation

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        scale = self.size / max(width, height)
        new_w = max(1, round(width * scale))
        new_h = max(1, round(height * scale))
        resized = image.resize((new_w, new_h), self.interpolation)
        canvas = Image.new("RGB", (self.size, self.size), (0, 0, 0))
        canvas.paste(resized, ((self.size - new_w) // 2, (self.size - new_h) // 2))
        return canvas

    def __repr__(self) -> str:
        return f"Letterbox(size={self.size})"


def build_transform(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    crop_size: int | None = None,
    train: bool = False,
    augment: ImageTransform | None = None,
) -> Callable[[Image.Image], torch.Tensor]:
    """Compose letterbox, optional crop, the train-time augmentation and normalisation.

    Returns a callable from a PIL RGB image to a float tensor of shape (3, S, S), where S is
    ``crop_size`` when given, else ``image_size``. The crop is random for training and central
    otherwise; ``augment`` runs on training images only, after letterbox and crop.
    """
    steps: list[Callable] = [Letterbox(image_size)]
    if crop_size is not None and crop_size != image_size:
        if not 8 <= crop_size <= image_size:
            raise ConfigError(
                f"data.crop_size={crop_size} is out of range; use 8 to data.image_size={image_size}."
            )
        steps.append(v2.RandomCrop(crop_size) if train else v2.CenterCrop(crop_size))
    if train and augment is not None:
        steps.append(augment)
    steps += [
        v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ]
    return v2.Compose(steps)


def channel_stats(
    paths: Sequence[str], image_size: int, cache_dir: str | Path | None = None
) -> tuple[list[float], list[float]]:
    """Compute per-channel mean and std of letterboxed images, in [0, 1] units.

    Call it with training images only: statistics from val or test images would leak them into
    training. Results are cached in ``cache_dir`` under a hash of the paths and the size.
    """
    key = hashlib.sha256(json.dumps([sorted(paths), image_size]).encode("utf-8")).hexdigest()[:16]
    cache_file = Path(cache_dir) / f"stats_{key}.json" if cache_dir is not None else None
    if cache_file is not None and cache_file.is_file():
        cached = json.loads(cache_file.read_text())
        return cached["mean"], cached["std"]

    letterbox = Letterbox(image_size)
    total = np.zeros(3)
    total_sq = np.zeros(3)
    count = 0
    for path in paths:
        pixels = np.asarray(letterbox(load_rgb(path)), dtype=np.float64).reshape(-1, 3) / 255.0
        total += pixels.sum(axis=0)
        total_sq += (pixels**2).sum(axis=0)
        count += len(pixels)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    result = ([float(m) for m in mean], [float(s) for s in std])

    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps({"mean": result[0], "std": result[1], "n": len(paths)}))
    return result
