"""Augmentation policies from torchvision: AutoAugment, RandAugment, AugMix, TrivialAugment.

All run on PIL images after the letterbox, with black (0) fill so that geometric operations
pad with the same colour as the letterbox.
"""

from __future__ import annotations

from torchvision.transforms import v2

from fishaug.augment.registry import check_range, register
from fishaug.errors import ConfigError

AUTOAUGMENT_POLICIES = {
    "imagenet": v2.AutoAugmentPolicy.IMAGENET,
    "cifar10": v2.AutoAugmentPolicy.CIFAR10,
    "svhn": v2.AutoAugmentPolicy.SVHN,
}


@register("none")
def no_augmentation() -> None:
    """No augmentation: the baseline."""
    return None


@register("autoaugment")
def autoaugment(policy: str = "imagenet") -> v2.AutoAugment:
    """AutoAugment with one of the policies learned on ImageNet, CIFAR-10 or SVHN."""
    if policy not in AUTOAUGMENT_POLICIES:
        raise ConfigError(
            f"aug.policy={policy!r} is not valid; use one of {sorted(AUTOAUGMENT_POLICIES)}."
        )
    return v2.AutoAugment(AUTOAUGMENT_POLICIES[policy], fill=0)


@register("randaugment")
def randaugment(n: int = 2, m: int = 9, num_magnitude_bins: int = 31) -> v2.RandAugment:
    """RandAugment: ``n`` random operations per image at magnitude ``m`` of ``num_magnitude_bins``."""
    check_range("aug.num_magnitude_bins", num_magnitude_bins, 2, 1000, integer=True)
    check_range("aug.n", n, 1, 14, integer=True)
    check_range("aug.m", m, 0, num_magnitude_bins - 1, integer=True)
    return v2.RandAugment(num_ops=n, magnitude=m, num_magnitude_bins=num_magnitude_bins, fill=0)


@register("augmix")
def augmix(
    severity: int = 3,
    width: int = 3,
    depth: int = -1,
    alpha: float = 1.0,
    all_ops: bool = True,
) -> v2.AugMix:
    """AugMix: ``width`` chains of ``depth`` operations (-1: 1 to 3 at random) at ``severity``."""
    check_range("aug.severity", severity, 1, 10, integer=True)
    check_range("aug.width", width, 1, 10, integer=True)
    check_range("aug.depth", depth, -1, 10, integer=True)
    if depth == 0:
        raise ConfigError("aug.depth=0 is out of range; use -1 (random 1 to 3) or 1 to 10.")
    check_range("aug.alpha", alpha, 1e-6, 100.0)
    return v2.AugMix(
        severity=severity,
        mixture_width=width,
        chain_depth=depth,
        alpha=float(alpha),
        all_ops=bool(all_ops),
        fill=0,
    )


@register("trivialaugment")
def trivialaugment(num_magnitude_bins: int = 31) -> v2.TrivialAugmentWide:
    """TrivialAugment (wide): one random operation at a random magnitude per image."""
    check_range("aug.num_magnitude_bins", num_magnitude_bins, 2, 1000, integer=True)
    return v2.TrivialAugmentWide(num_magnitude_bins=num_magnitude_bins, fill=0)
