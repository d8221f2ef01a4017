"""Train-time augmentations, all built through one registry from the Hydra ``aug`` group."""

from fishaug.augment.registry import AUGMENTATIONS, build_augmentation, register

# Importing the modules registers their entries.
from fishaug.augment import torchvision_policies  # noqa: E402, F401  isort: skip
from fishaug.augment import albumentations_policies  # noqa: E402, F401  isort: skip
from fishaug.augment import synthetic  # noqa: E402, F401  isort: skip

__all__ = ["AUGMENTATIONS", "build_augmentation", "register"]
