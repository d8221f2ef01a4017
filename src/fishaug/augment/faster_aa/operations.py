"""Operations of the Faster AutoAugment search: each has a learnable probability and magnitude.

Faster AutoAugment (Hataya et al., 2020, section 3.1) makes a policy differentiable by applying
each operation with a relaxed Bernoulli mask. It learns a magnitude through the image operation
itself, or through a straight-through estimator where the operation has no useful gradient. The operations here hold no parameters: the policy keeps a probability and a
magnitude in [0, 1] for every operation of every stage and passes them in per image. Every
operation also knows the Albumentations 2.0 transform that does the same at a fixed value,
so that a searched policy can be exported and trained with.

| name | Albumentations transform | value (magnitude 0 to 1) |
|---|---|---|
| shift_r, shift_g, shift_b | RGBShift | -0.5 to 0.5 of the maximum value |
| brightness | RandomBrightnessContrast | -0.5 to 0.5 added |
| contrast | RandomBrightnessContrast | -0.8 to 0.8, pixels times 1 + value |
| saturation | ColorJitter | factor 0 (gray) to 2 |
| solarize | Solarize | threshold 0 to 1 |
| posterize | Posterize | 1 to 7 bits kept |
| equalize | Equalize | none |
| hflip, vflip | HorizontalFlip, VerticalFlip | none |
| shift_x, shift_y | Affine(translate_percent) | -0.45 to 0.45 of the side |
| scale | Affine(scale) | factor 0.5 to 1.5 |
| rotate | Affine(rotate) | -30 to 30 degrees |
| shear_x, shear_y | Affine(shear) | -20 to 20 degrees |
| cutout | CoarseDropout | one hole, side 0 to 0.5 of the image side |
| cutout_holes | CoarseDropout | 1 to 16 holes, side 1/8 of the image side |

NOTE: the value ranges are narrower than AutoAlbument's (which rotates up to 180 degrees and
scales up to 10 times); fish crops are upright and fill the frame, and a narrower range spends
the search on plausible images.
"""

from __future__ import annotations

from typing import Any, ClassVar

import albumentations as A
import cv2
import torch

from fishaug.augment.faster_aa import functional as AF


class Operation:
    """An image operation of the search and its Albumentations counterpart.

    ``value_range`` is None for operations without a magnitude; otherwise a magnitude ``m``
    in [0, 1] maps to the value ``low + m * (high - low)``.
    """

    name: ClassVar[str]
    value_range: ClassVar[tuple[float, float] | None] = None
    unit: ClassVar[str] = ""
    # Operations that are piecewise constant in their value (thresholds, bit depths, hole
    # sizes) get straight-through gradients.
    differentiable: ClassVar[bool] = True

    @property
    def has_magnitude(self) -> bool:
        return self.value_range is not None

    def value(self, magnitude: torch.Tensor) -> torch.Tensor:
        """Map magnitudes in [0, 1] (any shape) onto ``value_range``."""
        if self.value_range is None:
            raise TypeError(f"Operation {self.name!r} has no magnitude.")
        low, high = self.value_range
        return low + magnitude * (high - low)

    def __call__(self, images: torch.Tensor, magnitudes: torch.Tensor | None) -> torch.Tensor:
        """Apply the operation to every image at its own magnitude (B,), or None."""
        values = self.value(magnitudes) if magnitudes is not None else None
        output = self.apply(images, values)
        if not self.differentiable:
            output = AF.straight_through(output, images, magnitudes)
        return output

    def apply(self, images: torch.Tensor, values: torch.Tensor | None) -> torch.Tensor:
        """Apply the operation to images (B, 3, H, W) at per-image values (B,)."""
        raise NotImplementedError

    def to_albumentations(self, value: float | None, p: float) -> A.BasicTransform:
        """Return the Albumentations transform at ``value``, applied with probability ``p``."""
        raise NotImplementedError

    def describe(self, value: float | None) -> str:
        """Return the operation and its value in words, for example ``rotate -12 degrees``."""
        if value is None:
            return self.name
        return f"{self.name} {self.format_value(value)}"

    def format_value(self, value: float) -> str:
        return f"{value:+.3g}" + (f" {self.unit}" if self.unit else "")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _fixed(value: float) -> tuple[float, float]:
    return (float(value), float(value))


class ShiftChannel(Operation):
    """Shift one colour channel; subclasses pick the channel."""

    channel: ClassVar[int]
    value_range = (-0.5, 0.5)

    def apply(self, images, values):
        return AF.shift_channel(images, self.channel, values)

    def to_albumentations(self, value, p):
        # RGBShift limits are in grey levels of a uint8 image.
        limits = [(0.0, 0.0)] * 3
        limits[self.channel] = _fixed(value * 255)
        return A.RGBShift(
            r_shift_limit=limits[0], g_shift_limit=limits[1], b_shift_limit=limits[2], p=p
        )

    def format_value(self, value):
        return f"{value * 255:+.0f} grey levels"


class ShiftRed(ShiftChannel):
    name = "shift_r"
    channel = 0


class ShiftGreen(ShiftChannel):
    name = "shift_g"
    channel = 1


class ShiftBlue(ShiftChannel):
    name = "shift_b"
    channel = 2


class Brightness(Operation):
    name = "brightness"
    value_range = (-0.5, 0.5)

    def apply(self, images, values):
        return AF.brightness(images, values)

    def to_albumentations(self, value, p):
        return A.RandomBrightnessContrast(
            brightness_limit=_fixed(value),
            contrast_limit=(0.0, 0.0),
            brightness_by_max=True,
            p=p,
        )


class Contrast(Operation):
    name = "contrast"
    value_range = (-0.8, 0.8)

    def apply(self, images, values):
        return AF.contrast(images, values)

    def to_albumentations(self, value, p):
        return A.RandomBrightnessContrast(
            brightness_limit=(0.0, 0.0), contrast_limit=_fixed(value), p=p
        )


class Saturation(Operation):
    name = "saturation"
    value_range = (0.0, 2.0)

    def apply(self, images, values):
        return AF.saturation(images, values)

    def to_albumentations(self, value, p):
        return A.ColorJitter(
            brightness=(1.0, 1.0),
            contrast=(1.0, 1.0),
            saturation=_fixed(value),
            hue=(0.0, 0.0),
            p=p,
        )

    def format_value(self, value):
        return f"{value:.3g} times"


class Solarize(Operation):
    name = "solarize"
    value_range = (0.0, 1.0)
    differentiable = False

    def apply(self, images, values):
        return AF.solarize(images, values)

    def to_albumentations(self, value, p):
        return A.Solarize(threshold_range=_fixed(value), p=p)

    def format_value(self, value):
        return f"above {value:.3g}"


class Posterize(Operation):
    name = "posterize"
    value_range = (1.0, 7.0)
    differentiable = False

    def apply(self, images, values):
        return AF.posterize(images, values.round())

    def to_albumentations(self, value, p):
        bits = round(value)
        return A.Posterize(num_bits=(bits, bits), p=p)

    def format_value(self, value):
        return f"to {round(value)} bits"


class Equalize(Operation):
    name = "equalize"
    differentiable = False

    def apply(self, images, values):
        return AF.equalize(images)

    def to_albumentations(self, value, p):
        return A.Equalize(mode="cv", by_channels=True, p=p)


class HorizontalFlip(Operation):
    name = "hflip"

    def apply(self, images, values):
        return AF.hflip(images)

    def to_albumentations(self, value, p):
        return A.HorizontalFlip(p=p)


class VerticalFlip(Operation):
    name = "vflip"

    def apply(self, images, values):
        return AF.vflip(images)

    def to_albumentations(self, value, p):
        return A.VerticalFlip(p=p)


class AffineOperation(Operation):
    """A geometric operation exported as Albumentations' Affine with black fill."""

    def matrices(self, images: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Per-image 3x3 matrices (B, 3, 3) in Albumentations' pixel convention."""
        raise NotImplementedError

    def affine_arguments(self, value: float) -> dict[str, Any]:
        raise NotImplementedError

    def apply(self, images, values):
        return AF.affine(images, self.matrices(images, values))

    def to_albumentations(self, value, p):
        return A.Affine(
            **self.affine_arguments(value),
            interpolation=cv2.INTER_LINEAR,
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            p=p,
        )


class ShiftX(AffineOperation):
    """Shift right (positive) or left by a fraction of the width.

    NOTE: Albumentations truncates the shift to whole pixels; the search shifts by fractions
    of a pixel so that the magnitude has a gradient.
    """

    name = "shift_x"
    value_range = (-0.45, 0.45)
    unit = "of the width"

    def matrices(self, images, values):
        return AF.translation_matrices(values * images.shape[-1], torch.zeros_like(values))

    def affine_arguments(self, value):
        return {"translate_percent": {"x": _fixed(value), "y": (0.0, 0.0)}}


class ShiftY(AffineOperation):
    """Shift down (positive) or up by a fraction of the height; whole pixels when exported."""

    name = "shift_y"
    value_range = (-0.45, 0.45)
    unit = "of the height"

    def matrices(self, images, values):
        return AF.translation_matrices(torch.zeros_like(values), values * images.shape[-2])

    def affine_arguments(self, value):
        return {"translate_percent": {"x": (0.0, 0.0), "y": _fixed(value)}}


class Scale(AffineOperation):
    name = "scale"
    value_range = (0.5, 1.5)

    def matrices(self, images, values):
        return AF.scale_matrices(values)

    def affine_arguments(self, value):
        return {"scale": _fixed(value)}

    def format_value(self, value):
        return f"{value:.3g} times"


class Rotate(AffineOperation):
    name = "rotate"
    value_range = (-30.0, 30.0)
    unit = "degrees"

    def matrices(self, images, values):
        return AF.rotation_matrices(values)

    def affine_arguments(self, value):
        return {"rotate": _fixed(value)}


class ShearX(AffineOperation):
    name = "shear_x"
    value_range = (-20.0, 20.0)
    unit = "degrees"

    def matrices(self, images, values):
        return AF.shear_matrices(values, torch.zeros_like(values))

    def affine_arguments(self, value):
        return {"shear": {"x": _fixed(value), "y": (0.0, 0.0)}}


class ShearY(AffineOperation):
    name = "shear_y"
    value_range = (-20.0, 20.0)
    unit = "degrees"

    def matrices(self, images, values):
        return AF.shear_matrices(torch.zeros_like(values), values)

    def affine_arguments(self, value):
        return {"shear": {"x": (0.0, 0.0), "y": _fixed(value)}}


class Cutout(Operation):
    """One black square whose side is a learnt fraction of the image side (DeVries and Taylor, 2017)."""

    name = "cutout"
    value_range = (0.0, 0.5)
    differentiable = False

    def apply(self, images, values):
        return AF.cutout(images, torch.ones_like(values), values)

    def to_albumentations(self, value, p):
        return A.CoarseDropout(
            num_holes_range=(1, 1),
            hole_height_range=_fixed(value),
            hole_width_range=_fixed(value),
            fill=0,
            p=p,
        )

    def format_value(self, value):
        return f"1 hole of {value:.2f} of the side"


class CutoutHoles(Operation):
    """A learnt number of black squares, each 1/8 of the image side."""

    name = "cutout_holes"
    value_range = (1.0, 16.0)
    differentiable = False
    hole_size: ClassVar[float] = 0.125

    def apply(self, images, values):
        return AF.cutout(images, values.round(), torch.full_like(values, self.hole_size))

    def to_albumentations(self, value, p):
        holes = round(value)
        return A.CoarseDropout(
            num_holes_range=(holes, holes),
            hole_height_range=_fixed(self.hole_size),
            hole_width_range=_fixed(self.hole_size),
            fill=0,
            p=p,
        )

    def format_value(self, value):
        holes = round(value)
        return f"{holes} {'hole' if holes == 1 else 'holes'} of {self.hole_size} of the side"


OPERATIONS: dict[str, Operation] = {
    operation.name: operation
    for operation in (
        ShiftRed(),
        ShiftGreen(),
        ShiftBlue(),
        Brightness(),
        Contrast(),
        Saturation(),
        Solarize(),
        Posterize(),
        Equalize(),
        HorizontalFlip(),
        VerticalFlip(),
        ShiftX(),
        ShiftY(),
        Scale(),
        Rotate(),
        ShearX(),
        ShearY(),
        Cutout(),
        CutoutHoles(),
    )
}
