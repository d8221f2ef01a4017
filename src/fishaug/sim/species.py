"""Species of the simulated fish counter: body shape, proportions, colours and markings.

Each species is a side view drawn with OpenCV polygons: a spindle-shaped body whose depth
profile, tail shape, fins and markings differ between species, loosely after central European
fish-pass species. Colours are RGB. The looks are caricatures that differ in shape, proportion,
colour and pattern, the cues a classifier must use on real counters. They are not anatomical
models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from fishaug.errors import ConfigError

RGB = tuple[int, int, int]
TAILS = ("forked", "lunate", "truncate", "rounded", "pointed")
PATTERNS = ("bars", "spots", "stripe", "mottled", "lateral_line")


@dataclass(frozen=True)
class SpeciesLook:
    """The appearance of one species, drawn facing right.

    Lengths are fractions of the body length (snout to tail base) unless noted.

    Attributes:
        name: the label, as the species folder is named.
        length: total length including the tail, as a fraction of the frame width.
        depth: greatest body depth.
        hump: where the body is deepest, from 0 (tail base) to 1 (snout).
        peduncle: depth at the tail base as a fraction of ``depth``.
        tail: one of ``TAILS``.
        tail_length: length of the tail fin.
        tail_spread: half height of the tail fin as a fraction of ``depth``.
        dorsal: start, end (0 tail base to 1 snout) and height (fraction of ``depth``) of the
            dorsal fin; ``second_dorsal`` likewise, or None.
        anal: the same for the anal fin.
        back, belly, fin: colours of the back, the belly and the fins.
        patterns: markings from ``PATTERNS``, drawn in ``pattern_colours`` (one colour per
            pattern, in order) ``pattern_count`` times where a count applies.
        eye: eye radius as a fraction of ``depth``.
        barbel: draw a chin barbel.
    """

    name: str
    length: float
    depth: float
    hump: float
    peduncle: float
    tail: str
    tail_length: float
    tail_spread: float
    dorsal: tuple[float, float, float]
    anal: tuple[float, float, float]
    back: RGB
    belly: RGB
    fin: RGB
    patterns: tuple[str, ...] = ()
    pattern_colours: tuple[RGB, ...] = ()
    pattern_count: int = 0
    second_dorsal: tuple[float, float, float] | None = None
    eye: float = 0.09
    barbel: bool = False

    def __post_init__(self) -> None:
        if self.tail not in TAILS:
            raise ValueError(f"Species {self.name!r}: tail {self.tail!r} is not one of {TAILS}.")
        unknown = sorted(set(self.patterns) - set(PATTERNS))
        if unknown:
            raise ValueError(f"Species {self.name!r}: patterns {unknown} are not in {PATTERNS}.")
        if len(self.pattern_colours) != len(self.patterns):
            raise ValueError(f"Species {self.name!r}: give one pattern colour per pattern.")


SPECIES: dict[str, SpeciesLook] = {
    look.name: look
    for look in (
        SpeciesLook(
            "bream", length=0.46, depth=0.42, hump=0.55, peduncle=0.18, tail="forked",
            tail_length=0.3, tail_spread=0.75, dorsal=(0.5, 0.68, 0.55), anal=(0.12, 0.5, 0.3),
            back=(96, 90, 70), belly=(200, 180, 120), fin=(70, 66, 60),
        ),
        SpeciesLook(
            "brown_trout", length=0.44, depth=0.23, hump=0.55, peduncle=0.45, tail="truncate",
            tail_length=0.2, tail_spread=0.95, dorsal=(0.45, 0.62, 0.6), anal=(0.15, 0.28, 0.45),
            back=(110, 90, 50), belly=(225, 200, 130), fin=(150, 120, 70),
            patterns=("spots", "spots"), pattern_colours=((40, 30, 25), (200, 60, 40)),
            pattern_count=14,
        ),
        SpeciesLook(
            "burbot", length=0.5, depth=0.15, hump=0.75, peduncle=0.5, tail="rounded",
            tail_length=0.14, tail_spread=1.2, dorsal=(0.08, 0.52, 0.45), anal=(0.05, 0.5, 0.4),
            second_dorsal=(0.56, 0.66, 0.35), back=(95, 85, 45), belly=(190, 175, 120),
            fin=(90, 80, 45), patterns=("mottled",), pattern_colours=((45, 40, 20),),
            barbel=True,
        ),
        SpeciesLook(
            "eel", length=0.62, depth=0.09, hump=0.7, peduncle=0.35, tail="pointed",
            tail_length=0.06, tail_spread=0.5, dorsal=(0.0, 0.6, 0.4), anal=(0.0, 0.52, 0.35),
            back=(55, 60, 35), belly=(180, 170, 110), fin=(60, 62, 40), eye=0.16,
        ),
        SpeciesLook(
            "grayling", length=0.44, depth=0.21, hump=0.6, peduncle=0.35, tail="forked",
            tail_length=0.26, tail_spread=1.0, dorsal=(0.42, 0.78, 1.5), anal=(0.16, 0.3, 0.45),
            back=(120, 125, 130), belly=(215, 215, 210), fin=(120, 70, 120),
            patterns=("spots",), pattern_colours=((35, 35, 40),), pattern_count=5,
        ),
        SpeciesLook(
            "perch", length=0.36, depth=0.3, hump=0.6, peduncle=0.33, tail="lunate",
            tail_length=0.22, tail_spread=0.8, dorsal=(0.55, 0.82, 0.7), anal=(0.18, 0.32, 0.55),
            second_dorsal=(0.25, 0.5, 0.55), back=(85, 115, 55), belly=(215, 215, 160),
            fin=(220, 90, 40), patterns=("bars",), pattern_colours=((30, 45, 25),),
            pattern_count=6,
        ),
        SpeciesLook(
            "pike", length=0.62, depth=0.14, hump=0.45, peduncle=0.55, tail="forked",
            tail_length=0.18, tail_spread=1.2, dorsal=(0.1, 0.24, 0.7), anal=(0.08, 0.22, 0.6),
            back=(70, 95, 45), belly=(210, 210, 150), fin=(120, 110, 60),
            patterns=("spots",), pattern_colours=((200, 200, 130),), pattern_count=18,
            eye=0.14,
        ),
        SpeciesLook(
            "rainbow_trout", length=0.44, depth=0.23, hump=0.55, peduncle=0.45, tail="truncate",
            tail_length=0.2, tail_spread=0.95, dorsal=(0.45, 0.62, 0.6), anal=(0.15, 0.28, 0.45),
            back=(70, 105, 110), belly=(230, 230, 225), fin=(110, 120, 115),
            patterns=("stripe", "spots"), pattern_colours=((225, 110, 130), (25, 25, 30)),
            pattern_count=22,
        ),
        SpeciesLook(
            "chub", length=0.42, depth=0.25, hump=0.55, peduncle=0.38, tail="forked",
            tail_length=0.24, tail_spread=0.85, dorsal=(0.48, 0.64, 0.6), anal=(0.15, 0.3, 0.55),
            back=(60, 65, 70), belly=(205, 205, 200), fin=(90, 80, 80),
            patterns=("lateral_line",), pattern_colours=((50, 50, 55),),
        ),
        SpeciesLook(
            "nase", length=0.42, depth=0.22, hump=0.58, peduncle=0.36, tail="forked",
            tail_length=0.26, tail_spread=0.8, dorsal=(0.5, 0.66, 0.6), anal=(0.15, 0.3, 0.5),
            back=(100, 110, 110), belly=(225, 225, 215), fin=(230, 120, 80),
        ),
    )
}  # fmt: skip


def get_species(names: list[str] | tuple[str, ...]) -> list[SpeciesLook]:
    """Return the looks of the named species, in the given order.

    Raises:
        ConfigError: a name is unknown or repeated, or fewer than two species are named.
    """
    names = list(names)
    unknown = [name for name in names if name not in SPECIES]
    if unknown:
        raise ConfigError(
            f"dataset.species names unknown species {unknown}; choose from {sorted(SPECIES)}."
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"dataset.species={names} names a species twice.")
    if len(names) < 2:
        raise ConfigError(f"dataset.species={names} needs at least two species to classify.")
    return [SPECIES[name] for name in names]


class FishSprite:
    """One individual fish of a species, drawn at a given size.

    The body, fins and markings are drawn once. Each ``render`` call adds the tail at its
    current beat and returns a float RGB image with an alpha mask. The individual's size,
    colour shade and marking positions come from ``rng``.

    Args:
        look: the species.
        length_px: total length of the fish (snout to tail tip) in pixels.
        rng: source of the individual variation.
        supersample: drawing happens at this many times the size, then is scaled down, so
            small spots and fins keep smooth edges.
    """

    def __init__(
        self, look: SpeciesLook, length_px: float, rng: np.random.Generator, supersample: int = 3
    ):
        self.look = look
        self.supersample = supersample
        self.body_length = supersample * length_px / (1 + look.tail_length)
        self.half_depth = 0.5 * look.depth * self.body_length
        fin_height = max(look.dorsal[2], look.anal[2], look.tail_spread, 1.0)
        self.pad = 3 * supersample
        self.tail_root = self.pad + look.tail_length * self.body_length
        width = math.ceil(self.tail_root + self.body_length + self.pad + 1)
        height = math.ceil(2 * (self.half_depth * (1 + fin_height)) + 2 * self.pad + 2)
        # The drawing canvas is a whole multiple of the output size.
        self.output_size = (math.ceil(width / supersample), math.ceil(height / supersample))
        self.size = (self.output_size[0] * supersample, self.output_size[1] * supersample)
        self.centre_y = height / 2
        # An individual's shade: each channel within about 8 % of the species colour.
        self.shade = rng.uniform(0.92, 1.08, size=3)
        self._body_mask, self._fin_mask, self._colour = self._draw_static(rng)
        self._poses: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def profile(self, t: np.ndarray) -> np.ndarray:
        """Half depth of the body (pixels) at positions ``t`` from 0 (tail base) to 1 (snout)."""
        look = self.look
        exponent = math.log(0.5) / math.log(look.hump)
        rounded = np.sin(np.pi * np.clip(t, 0, 1) ** exponent) ** 0.6
        tail_blend = (1 - t) ** 3
        return self.half_depth * (rounded * (1 - tail_blend) + look.peduncle * tail_blend)

    def body_x(self, t: np.ndarray | float) -> np.ndarray | float:
        return self.tail_root + np.asarray(t) * self.body_length

    def render(self, tail_phase: float) -> tuple[np.ndarray, np.ndarray]:
        """Draw the fish with its tail at beat ``tail_phase`` (radians).

        Returns:
            ``(rgb, alpha)``: float32 arrays of shape (height, width, 3) in 0 to 255 and
            (height, width) in 0 to 1, where (width, height) is ``output_size``.
        """
        # Seen from the side, a beating tail swings towards and away from the camera, so it
        # looks shorter and longer rather than turning in the image plane. Eight steps of
        # reach are enough at the sizes drawn, and each is drawn once.
        step = round(3.5 + 3.5 * math.cos(tail_phase))
        if step not in self._poses:
            self._poses[step] = self._render_pose(0.75 + 0.25 * (step - 3.5) / 3.5)
        rgb, alpha = self._poses[step]
        return rgb.copy(), alpha.copy()

    def _render_pose(self, reach: float) -> tuple[np.ndarray, np.ndarray]:
        width, height = self.size
        tail_mask = np.zeros((height, width), np.uint8)
        polygon = self._tail_polygon(reach)
        cv2.fillPoly(tail_mask, [np.round(polygon * 4).astype(np.int32)], 255, cv2.LINE_AA, shift=2)

        fins = np.maximum(self._fin_mask, tail_mask).astype(np.float32) / 255.0
        body = self._body_mask.astype(np.float32) / 255.0
        fin_colour = np.array(self.look.fin, np.float32) * self.shade
        alpha = np.maximum(body, 0.85 * fins)
        weight = body / np.maximum(alpha, 1e-6)
        rgb = weight[..., None] * self._colour + (1 - weight[..., None]) * fin_colour

        # Scale colour premultiplied by alpha, so edge pixels do not darken towards black.
        premultiplied = cv2.resize(
            rgb * alpha[..., None], self.output_size, interpolation=cv2.INTER_AREA
        )
        alpha = cv2.resize(alpha, self.output_size, interpolation=cv2.INTER_AREA)
        rgb = premultiplied / np.maximum(alpha, 1e-6)[..., None]
        return np.clip(rgb, 0, 255).astype(np.float32), np.clip(alpha, 0, 1).astype(np.float32)

    def _tail_polygon(self, reach: float) -> np.ndarray:
        look = self.look
        root = self.tail_root + 0.5
        cy = self.centre_y
        peduncle = self.half_depth * look.peduncle
        tail = look.tail_length * self.body_length * reach
        spread = self.half_depth * look.tail_spread
        if look.tail == "rounded":
            angles = np.linspace(-np.pi / 2, np.pi / 2, 15)
            arc = np.stack([root - tail * np.cos(angles), cy + spread * np.sin(angles)], axis=1)
            points = [(root + 1, cy - peduncle), *arc.tolist(), (root + 1, cy + peduncle)]
            return np.array(points)
        if look.tail == "pointed":
            return np.array(
                [(root + 1, cy - peduncle), (root - tail, cy), (root + 1, cy + peduncle)]
            )
        notch = {"forked": 0.45, "lunate": 0.72, "truncate": 0.93}[look.tail]
        return np.array(
            [
                (root + 1, cy - peduncle),
                (root - tail, cy - spread),
                (root - notch * tail, cy),
                (root - tail, cy + spread),
                (root + 1, cy + peduncle),
            ]
        )

    def _draw_static(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        look = self.look
        width, height = self.size
        cy = self.centre_y
        t = np.linspace(0, 1, 48)
        x = self.body_x(t)
        depth = self.profile(t)
        upper = np.stack([x, cy - depth], axis=1)
        lower = np.stack([x, cy + 0.9 * depth], axis=1)[::-1]
        body_polygon = np.concatenate([upper, lower])
        body_mask = np.zeros((height, width), np.uint8)
        _fill(body_mask, body_polygon)

        fin_mask = np.zeros((height, width), np.uint8)
        for fin, side in ((look.dorsal, -1), (look.second_dorsal, -1), (look.anal, 1)):
            if fin is not None:
                _fill(fin_mask, self._fin_polygon(fin, side))
        pectoral_x = float(self.body_x(0.72))
        pectoral_y = cy + 0.45 * self.half_depth
        fin_size = 0.55 * self.half_depth
        _fill(
            fin_mask,
            np.array(
                [
                    (pectoral_x, pectoral_y),
                    (pectoral_x - 1.6 * fin_size, pectoral_y + 0.8 * fin_size),
                    (pectoral_x - 0.3 * fin_size, pectoral_y + 0.2 * fin_size),
                ]
            ),
        )
        if look.barbel:
            chin = (float(self.body_x(0.97)), cy + 0.4 * self.half_depth)
            end = (chin[0] - 0.1 * self.body_length, chin[1] + 0.9 * self.half_depth)
            cv2.line(fin_mask, _point(chin), _point(end), 255, self.supersample, cv2.LINE_AA)

        colour = self._colour_layer(rng)
        eye_centre = (float(self.body_x(0.9)), cy - 0.2 * self.half_depth)
        eye_radius = max(float(self.supersample), look.eye * 2 * self.half_depth)
        cv2.circle(colour, _point(eye_centre), round(eye_radius), (25, 25, 25), -1, cv2.LINE_AA)
        if eye_radius >= 2 * self.supersample:
            glint = (eye_centre[0] + 0.3 * eye_radius, eye_centre[1] - 0.3 * eye_radius)
            cv2.circle(colour, _point(glint), self.supersample, (200, 200, 200), -1, cv2.LINE_AA)
        return body_mask, fin_mask, colour

    def _fin_polygon(self, fin: tuple[float, float, float], side: int) -> np.ndarray:
        start, end, height = fin
        fin_height = height * self.half_depth
        t = np.array([start, start + 0.25 * (end - start), end, min(end + 0.04, 1.0)])
        x = self.body_x(t)
        base = self.profile(t) * (1.0 if side < 0 else 0.9)
        y = self.centre_y + side * (base + np.array([0.0, fin_height, 0.45 * fin_height, 0.0]))
        return np.stack([x, y - side * 1.5], axis=1)

    def _colour_layer(self, rng: np.random.Generator) -> np.ndarray:
        """Counter-shaded body colour with the species' markings, float32 (H, W, 3) in 0 to 255."""
        look = self.look
        width, height = self.size
        ys = (np.arange(height, dtype=np.float32) - (self.centre_y - self.half_depth)) / (
            2 * self.half_depth
        )
        belly_weight = np.clip((ys - 0.3) / 0.4, 0, 1)[:, None, None]
        back = np.array(look.back, np.float32) * self.shade
        belly = np.array(look.belly, np.float32) * self.shade
        colour = (1 - belly_weight) * back + belly_weight * belly
        colour = np.broadcast_to(colour, (height, width, 3)).copy()
        # Light from above: the top of the fish is a little brighter than its underside.
        colour *= (1.1 - 0.2 * np.clip(ys, 0, 1))[:, None, None]

        for pattern, pattern_colour in zip(look.patterns, look.pattern_colours, strict=True):
            marking = np.array(pattern_colour, np.float32)
            layer = np.zeros((height, width), np.float32)
            getattr(self, f"_mark_{pattern}")(layer, rng)
            colour = colour * (1 - layer[..., None]) + marking * layer[..., None]
        return colour

    def _mark_bars(self, layer: np.ndarray, rng: np.random.Generator) -> None:
        count = self.look.pattern_count
        bar_width = max(1, round(0.045 * self.body_length))
        for k in range(count):
            t = 0.15 + 0.7 * (k + 0.5) / count + rng.normal(0, 0.01)
            x = round(float(self.body_x(t)))
            top = round(self.centre_y - self.half_depth)
            bottom = round(self.centre_y + 0.45 * self.half_depth)
            cv2.line(layer, (x, top), (x, bottom), 0.75, bar_width, cv2.LINE_AA)

    def _mark_spots(self, layer: np.ndarray, rng: np.random.Generator) -> None:
        for _ in range(self.look.pattern_count):
            t = rng.uniform(0.12, 0.85)
            v = rng.uniform(-0.75, 0.3)
            centre = (float(self.body_x(t)), self.centre_y + v * float(self.profile(np.array(t))))
            radius = max(1, round(rng.uniform(0.012, 0.022) * self.body_length))
            cv2.circle(layer, _point(centre), radius, 0.9, -1, cv2.LINE_AA)

    def _mark_stripe(self, layer: np.ndarray, rng: np.random.Generator) -> None:
        t = np.linspace(0.05, 0.92, 30)
        x = self.body_x(t)
        half = 0.22 * self.profile(t)
        polygon = np.concatenate(
            [
                np.stack([x, self.centre_y + 0.05 * self.half_depth - half], axis=1),
                np.stack([x, self.centre_y + 0.05 * self.half_depth + half], axis=1)[::-1],
            ]
        )
        mask = np.zeros(layer.shape, np.uint8)
        _fill(mask, polygon)
        layer += 0.7 * mask.astype(np.float32) / 255.0

    def _mark_mottled(self, layer: np.ndarray, rng: np.random.Generator) -> None:
        height, width = layer.shape
        noise = rng.random((max(2, height // 6), max(2, width // 6))).astype(np.float32)
        noise = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
        layer += np.clip((noise - 0.5) * 2.5, 0, 0.8)

    def _mark_lateral_line(self, layer: np.ndarray, rng: np.random.Generator) -> None:
        t = np.linspace(0.05, 0.88, 24)
        points = np.stack([self.body_x(t), self.centre_y - 0.1 * self.profile(t)], axis=1)
        cv2.polylines(
            layer, [np.round(points).astype(np.int32)], False, 0.8, self.supersample, cv2.LINE_AA
        )
        # Dark scale edges give chub its netted look.
        for _ in range(30):
            t_spot = rng.uniform(0.1, 0.85)
            v = rng.uniform(-0.8, 0.2)
            centre = (
                float(self.body_x(t_spot)),
                self.centre_y + v * float(self.profile(np.array(t_spot))),
            )
            cv2.circle(
                layer, _point(centre), max(1, round(0.02 * self.body_length)), 0.2, self.supersample
            )


def _fill(mask: np.ndarray, polygon: np.ndarray) -> None:
    """Fill a float polygon into a uint8 mask with anti-aliased edges (2 bits of sub-pixel)."""
    cv2.fillPoly(mask, [np.round(polygon * 4).astype(np.int32)], 255, cv2.LINE_AA, shift=2)


def _point(xy: tuple[float, float]) -> tuple[int, int]:
    return round(xy[0]), round(xy[1])
