"""Scene and recording conditions of a simulated fish-counter video.

Each video draws its own conditions, as real counters differ from recording to recording:
darkness or over-exposure, turbid or blurry water, algae on the glass, sensor noise, fish cut by
the frame edge, long stretches without fish, and low resolution. The probability of each
condition is set in the config; its strength is drawn from the ranges below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from fishaug.errors import ConfigError

CONDITIONS = ("dark", "overexposed", "turbid", "blur", "algae", "noise", "cut", "empty", "low_res")

# Water tints (RGB) of the background: green, blue-green, brown-green and grey water.
WATER_TINTS = ((70, 115, 90), (60, 105, 115), (105, 105, 70), (100, 105, 105))


@dataclass(frozen=True)
class Conditions:
    """The recording conditions of one video.

    Attributes:
        names: the conditions that were drawn, from ``CONDITIONS``.
        gain: exposure factor; below 1 is dark, above 1 over-exposed and clipped.
        turbidity: 0 (clear) to 1 (opaque): how much the fish fades into the water colour and
            the whole frame into haze.
        blur: standard deviation in pixels of a Gaussian blur (0: sharp).
        algae: share of the window (0 to 1) covered by algae on the glass.
        noise: standard deviation of the sensor noise in grey levels.
        cut: share of the fish's height outside the top or bottom frame edge (0: fully in view).
        empty: share of frames without a fish.
        scale: written resolution relative to the rendered one (below 1: low resolution).
    """

    names: tuple[str, ...] = ()
    gain: float = 1.0
    turbidity: float = 0.1
    blur: float = 0.0
    algae: float = 0.0
    noise: float = 1.5
    cut: float = 0.0
    empty: float = 0.2
    scale: float = 1.0


def check_probabilities(probabilities: Mapping[str, float]) -> dict[str, float]:
    """Return the condition probabilities as a dict, every condition present.

    Raises:
        ConfigError: a name is not in ``CONDITIONS`` or a probability is outside 0 to 1.
    """
    unknown = sorted(set(probabilities) - set(CONDITIONS))
    if unknown:
        raise ConfigError(
            f"dataset.conditions has unknown condition(s) {unknown}; use {list(CONDITIONS)}."
        )
    checked = {name: float(probabilities.get(name, 0.0)) for name in CONDITIONS}
    for name, probability in checked.items():
        if not 0.0 <= probability <= 1.0:
            raise ConfigError(
                f"dataset.conditions.{name}={probability} is out of range; use a probability "
                "from 0 to 1."
            )
    return checked


def sample_conditions(rng: np.random.Generator, probabilities: Mapping[str, float]) -> Conditions:
    """Draw the conditions of one video; each condition occurs with its probability."""
    drawn = [name for name in CONDITIONS if rng.random() < probabilities[name]]
    # A video is either dark or over-exposed, not both.
    if "dark" in drawn and "overexposed" in drawn:
        drawn.remove("dark" if rng.random() < 0.5 else "overexposed")

    gain = rng.uniform(0.85, 1.15)
    if "dark" in drawn:
        gain = rng.uniform(0.3, 0.5)
    elif "overexposed" in drawn:
        gain = rng.uniform(1.7, 2.4)
    return Conditions(
        names=tuple(drawn),
        gain=gain,
        turbidity=rng.uniform(0.35, 0.6) if "turbid" in drawn else rng.uniform(0.05, 0.15),
        blur=rng.uniform(1.2, 2.2) if "blur" in drawn else 0.0,
        algae=rng.uniform(0.08, 0.2) if "algae" in drawn else 0.0,
        noise=rng.uniform(5.0, 10.0) if "noise" in drawn else rng.uniform(1.0, 2.5),
        cut=rng.uniform(0.3, 0.5) if "cut" in drawn else 0.0,
        empty=rng.uniform(0.4, 0.6) if "empty" in drawn else rng.uniform(0.1, 0.25),
        scale=rng.uniform(0.55, 0.7) if "low_res" in drawn else 1.0,
    )


@dataclass
class Scene:
    """The static parts of one video: the window's background and the algae on the glass.

    Attributes:
        background: float32 RGB image (height, width, 3) in 0 to 255.
        water: the water colour (RGB) that turbidity fades towards.
        algae_alpha: float32 (height, width) coverage of the algae, 0 to 1.
        algae_colour: RGB colour of the algae.
    """

    background: np.ndarray
    water: np.ndarray
    algae_alpha: np.ndarray
    algae_colour: np.ndarray


def make_scene(width: int, height: int, conditions: Conditions, rng: np.random.Generator) -> Scene:
    """Draw the background of the viewing window and the algae of one video."""
    water = np.array(WATER_TINTS[rng.integers(len(WATER_TINTS))], np.float32)
    water = (water * rng.uniform(0.9, 1.25) + rng.normal(0, 6, size=3)).astype(np.float32)

    # Light from above: the top of the window is brighter than the bottom.
    gradient = np.linspace(1.15, 0.8, height, dtype=np.float32)[:, None, None]
    texture = _smooth_noise(rng, width, height, cells=(5, 7))[..., None] * 24.0
    background = water * gradient + texture
    # The frame of the viewing window, a dark band at the top or bottom edge.
    for edge in ("top", "bottom"):
        thickness = int(rng.integers(0, max(1, height // 12)))
        if thickness > 0:
            rows = slice(0, thickness) if edge == "top" else slice(height - thickness, height)
            background[rows] = background[rows] * 0.35
    background = np.clip(background, 0, 255)

    algae_alpha = np.zeros((height, width), np.float32)
    if conditions.algae > 0:
        noise = _smooth_noise(rng, width, height, cells=(6, 8))
        level = np.quantile(noise, 1.0 - conditions.algae)
        algae_alpha = np.clip((noise - level) * 8.0, 0, 1) * rng.uniform(0.55, 0.85)
        algae_alpha = cv2.GaussianBlur(algae_alpha.astype(np.float32), (0, 0), 1.5)
    algae_colour = (np.array((70, 90, 40)) + rng.normal(0, 8, size=3)).astype(np.float32)
    return Scene(background.astype(np.float32), water, algae_alpha.astype(np.float32), algae_colour)


def finish_frame(
    frame: np.ndarray, scene: Scene, conditions: Conditions, rng: np.random.Generator
) -> np.ndarray:
    """Apply the glass, the water and the camera to a rendered RGB frame.

    Order: algae on the glass, haze of turbid water, exposure (with clipping and a slight
    flicker of the lights), blur, down-scaling for low resolution, sensor noise.

    Args:
        frame: float32 RGB (height, width, 3) in 0 to 255: background and fish.

    Returns:
        uint8 BGR frame, scaled by ``conditions.scale``, ready for the video writer.
    """
    frame = frame.astype(np.float32, copy=False)
    if conditions.algae > 0:
        alpha = scene.algae_alpha[..., None]
        frame = frame * (1 - alpha) + scene.algae_colour * alpha
    haze = np.float32(0.5 * conditions.turbidity)
    frame = frame * (1 - haze) + scene.water * haze

    flicker = np.float32(conditions.gain * (1.0 + rng.normal(0, 0.01)))
    frame = np.clip(frame * flicker, 0, 255)
    if conditions.blur > 0:
        frame = cv2.GaussianBlur(frame, (0, 0), conditions.blur)
    if conditions.scale != 1.0:
        height, width = frame.shape[:2]
        # Even sizes, because Motion JPEG and MPEG-4 drop an odd last column or row.
        size = (2 * round(width * conditions.scale / 2), 2 * round(height * conditions.scale / 2))
        frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    frame += np.float32(conditions.noise) * rng.standard_normal(frame.shape, dtype=np.float32)
    return cv2.cvtColor(np.clip(frame, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)


def _smooth_noise(
    rng: np.random.Generator, width: int, height: int, cells: tuple[int, int]
) -> np.ndarray:
    """Low-frequency noise in about -1 to 1: random values on a coarse grid, scaled up smoothly."""
    grid = rng.uniform(-1, 1, size=cells).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
