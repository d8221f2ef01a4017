"""Image operations on batches of tensors, defined as Albumentations 2.0 defines them.

Every function takes images as a float tensor of shape (B, 3, H, W) with values in [0, 1] and
returns a tensor of the same shape and range. Values are per image, shape (B,), so that one
call serves a batch whose images use different sub-policies. Operations whose output is not
differentiable in the value (solarize, posterize, equalize, cutout) are wrapped in
:func:`straight_through`.

Each function follows the Albumentations 2.0.8 transform that the search exports, so that an
exported policy does what was searched. The remaining differences come from Albumentations
working on uint8 images (every step rounds to whole grey levels) and are noted where they sit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# ITU-R BT.601 luma weights, the ones OpenCV's COLOR_RGB2GRAY uses.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def check_images(images: torch.Tensor) -> None:
    """Raise ValueError unless ``images`` is a float tensor of shape (B, 3, H, W)."""
    if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(
            f"Expected float RGB images of shape (B, 3, H, W), got {images.dtype} of shape "
            f"{tuple(images.shape)}. Convert grayscale images to RGB first."
        )


def straight_through(
    output: torch.Tensor, images: torch.Tensor, magnitudes: torch.Tensor | None = None
) -> torch.Tensor:
    """Return ``output`` with straight-through gradients for a non-differentiable operation.

    The forward value is ``output``. Backward, the gradient passes to ``images`` unchanged
    (identity) and to each image's magnitude (shape (B,)) as the sum of that image's output
    gradient, the estimator of the Faster AutoAugment reference code (Hataya et al., 2020).
    """
    result = images + (output - images).detach()
    if magnitudes is not None:
        result = result + (magnitudes - magnitudes.detach()).view(-1, 1, 1, 1)
    return result


def per_image(values: torch.Tensor) -> torch.Tensor:
    """Reshape per-image values (B,) to broadcast over images (B, 1, 1, 1)."""
    return values.view(-1, 1, 1, 1)


def brightness(images: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Add ``beta`` (in units of the maximum value) to every pixel.

    RandomBrightnessContrast with ``brightness_by_max=True`` and contrast 0.
    """
    return (images + per_image(beta)).clamp(0, 1)


def contrast(images: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
    """Multiply every pixel by ``1 + change``.

    RandomBrightnessContrast with brightness 0: Albumentations scales about 0, not about the
    image mean, so this darkens or brightens as well as stretching contrast.
    """
    return (images * (1 + per_image(change))).clamp(0, 1)


def shift_channel(images: torch.Tensor, channel: int, shift: torch.Tensor) -> torch.Tensor:
    """Add ``shift`` (in units of the maximum value) to one channel (0 red, 1 green, 2 blue)."""
    zeros = torch.zeros_like(shift)
    offset = torch.stack([shift if c == channel else zeros for c in range(3)], dim=1)
    return (images + offset.view(-1, 3, 1, 1)).clamp(0, 1)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """Return the luma of ``images`` repeated on three channels, shape (B, 3, H, W)."""
    weights = torch.tensor(LUMA_WEIGHTS, dtype=images.dtype, device=images.device)
    luma = (images * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    return luma.expand_as(images)


def saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend the image with its grayscale version: 0 is gray, 1 the original, 2 twice as vivid.

    ColorJitter's saturation (torchvision's definition) with brightness, contrast and hue off.
    """
    gray = grayscale(images)
    return (gray + per_image(factor) * (images - gray)).clamp(0, 1)


def solarize(images: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Invert the pixels at or above ``threshold`` (in [0, 1])."""
    return torch.where(images >= per_image(threshold), 1 - images, images)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Quantise [0, 1] images to uint8 grey levels as Albumentations' uint8 pipeline would."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def posterize(images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the ``bits`` (whole numbers 1 to 8, per image) highest bits of each uint8 value."""
    masks = ((255 << (8 - bits.long())) & 255).to(torch.uint8)
    return (to_uint8(images) & per_image(masks)).to(images.dtype) / 255


def equalize(images: torch.Tensor) -> torch.Tensor:
    """Equalise the histogram of each channel as OpenCV's ``equalizeHist`` does.

    Albumentations' Equalize (``mode="cv"``, ``by_channels=True``) calls ``equalizeHist`` on
    each uint8 channel; this is the same look-up table computed for a whole batch at once.
    """
    batch, channels, height, width = images.shape
    levels = to_uint8(images).reshape(batch * channels, height * width).long()
    histogram = torch.zeros(batch * channels, 256, device=images.device)
    histogram.scatter_add_(1, levels, torch.ones_like(levels, dtype=histogram.dtype))

    # OpenCV maps the lowest occupied level to 0 and spreads the rest over 1 to 255.
    first = (histogram > 0).float().argmax(dim=1, keepdim=True)
    first_count = histogram.gather(1, first)
    total = float(height * width)
    scale = 255.0 / (total - first_count).clamp_min(1)
    lut = ((histogram.cumsum(dim=1) - first_count) * scale).round().clamp(0, 255)
    # A channel of a single grey level stays at that level.
    lut = torch.where(first_count == total, first.float().expand_as(lut), lut)

    equalized = lut.gather(1, levels) / 255
    return equalized.view(batch, channels, height, width).to(images.dtype)


def hflip(images: torch.Tensor) -> torch.Tensor:
    return images.flip(-1)


def vflip(images: torch.Tensor) -> torch.Tensor:
    return images.flip(-2)


def affine(images: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Warp each image with its 3x3 affine matrix (B, 3, 3) in Albumentations' convention.

    A matrix maps source to destination pixel coordinates (x right, y down), centred on the
    image centre ``(W / 2 - 0.5, H / 2 - 0.5)`` as Albumentations' Affine centres it. The warp
    is bilinear and fills with black (0), like ``Affine(border_mode=cv2.BORDER_CONSTANT,
    fill=0)``.
    """
    _, _, height, width = images.shape
    # With align_corners=False a normalised coordinate is the centred pixel coordinate
    # divided by half the side, so these diagonal matrices convert between the two.
    half = torch.diag(images.new_tensor([width / 2, height / 2, 1.0]))
    half_inverse = torch.diag(images.new_tensor([2 / width, 2 / height, 1.0]))
    # affine_grid needs the inverse map: for each output pixel, where to sample the input.
    theta = half_inverse @ invert_affine(matrices) @ half
    grid = F.affine_grid(theta[:, :2], list(images.shape), align_corners=False)
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return warped.clamp(0, 1)


def invert_affine(matrices: torch.Tensor) -> torch.Tensor:
    """Invert affine matrices (B, 3, 3) whose last row is (0, 0, 1), in closed form.

    Cheaper than a general 3x3 inverse for the small matrices here, and differentiable.
    """
    a, b, tx = matrices[:, 0, 0], matrices[:, 0, 1], matrices[:, 0, 2]
    c, d, ty = matrices[:, 1, 0], matrices[:, 1, 1], matrices[:, 1, 2]
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    return _matrices(
        [
            [ia, ib, -(ia * tx + ib * ty)],
            [ic, id_, -(ic * tx + id_ * ty)],
            [zero, zero, one],
        ]
    )


def _matrices(rows: list[list[torch.Tensor]]) -> torch.Tensor:
    """Stack a 3x3 layout of per-image entries (B,) into matrices (B, 3, 3)."""
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


def translation_matrices(dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Translate by ``dx``, ``dy`` pixels (right and down positive)."""
    one, zero = torch.ones_like(dx), torch.zeros_like(dx)
    return _matrices([[one, zero, dx], [zero, one, dy], [zero, zero, one]])


def rotation_matrices(degrees: torch.Tensor) -> torch.Tensor:
    """Rotate by ``degrees`` counter-clockwise as displayed (Albumentations' and OpenCV's sign)."""
    radians = torch.deg2rad(degrees)
    cos, sin = radians.cos(), radians.sin()
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    return _matrices([[cos, sin, zero], [-sin, cos, zero], [zero, zero, one]])


def scale_matrices(factor: torch.Tensor) -> torch.Tensor:
    """Scale by ``factor`` about the centre (above 1 zooms in)."""
    one, zero = torch.ones_like(factor), torch.zeros_like(factor)
    return _matrices([[factor, zero, zero], [zero, factor, zero], [zero, zero, one]])


def shear_matrices(x_degrees: torch.Tensor, y_degrees: torch.Tensor) -> torch.Tensor:
    """Shear as ``Affine(shear={"x": x_degrees, "y": y_degrees})``.

    Albumentations negates the sampled shear angles before building the matrix; so does this.
    """
    tan_x, tan_y = torch.tan(torch.deg2rad(-x_degrees)), torch.tan(torch.deg2rad(-y_degrees))
    one, zero = torch.ones_like(tan_x), torch.zeros_like(tan_x)
    return _matrices([[one, tan_x, zero], [tan_y, one, zero], [zero, zero, one]])


def cutout(
    images: torch.Tensor, num_holes: torch.Tensor, size_fraction: torch.Tensor
) -> torch.Tensor:
    """Fill ``num_holes`` black squares per image, each ``size_fraction`` of the side.

    ``num_holes`` (whole numbers) and ``size_fraction`` are per image, shape (B,). Like
    CoarseDropout with fractional hole sizes, a hole is ``int(side * size_fraction)`` pixels
    (0 means no hole) and its top-left corner is uniform over the positions that keep it
    inside the image.
    """
    batch, _, height, width = images.shape
    device = images.device
    max_holes = max(int(num_holes.max()), 1)
    hole_h = per_image((height * size_fraction).floor())
    hole_w = per_image((width * size_fraction).floor())
    # (B, holes, 1, 1) corners, uniform over 0 .. side - hole.
    shape = (batch, max_holes, 1, 1)
    top = (torch.rand(shape, device=device) * (height - hole_h + 1)).floor()
    left = (torch.rand(shape, device=device) * (width - hole_w + 1)).floor()
    rows = torch.arange(height, device=device).view(1, 1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, 1, width)
    inside = (rows >= top) & (rows < top + hole_h) & (cols >= left) & (cols < left + hole_w)
    used = torch.arange(max_holes, device=device).view(1, -1, 1, 1) < per_image(num_holes)
    covered = (inside & used).any(dim=1, keepdim=True)
    return images * (~covered).to(images.dtype)
