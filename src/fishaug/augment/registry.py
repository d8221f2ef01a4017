"""One registry for every option of the ``aug`` config group.

Each entry is a builder that takes the keys of its ``aug`` config as keyword arguments, checks
them, and returns a PIL-to-PIL transform for training images (or None for no augmentation).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from fishaug.data.transforms import ImageTransform
from fishaug.errors import ConfigError

Builder = Callable[..., ImageTransform | None]
AUGMENTATIONS: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Register a builder under ``name``, the value of ``aug.name``."""

    def decorator(builder: Builder) -> Builder:
        if name in AUGMENTATIONS:
            raise ValueError(f"Augmentation {name!r} is registered twice.")
        AUGMENTATIONS[name] = builder
        return builder

    return decorator


def build_augmentation(config: Mapping[str, Any], **context: Any) -> ImageTransform | None:
    """Build the training augmentation described by an ``aug`` config.

    ``context`` carries run-level values that some builders need (for example the run's seed);
    a builder receives only the ones its signature names.

    Raises:
        ConfigError: the name is unknown, a key is not a parameter of that augmentation, or a
            value is out of range.
    """
    params = dict(config)
    name = params.pop("name", None)
    if name not in AUGMENTATIONS:
        raise ConfigError(f"aug.name={name!r} is not valid; use one of {sorted(AUGMENTATIONS)}.")
    builder = AUGMENTATIONS[name]
    signature = inspect.signature(builder)
    accepted = [p for p in signature.parameters if p not in context]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(
            f"aug={name} has no parameter(s) {unknown}; its parameters are {accepted}."
        )
    params.update({k: v for k, v in context.items() if k in signature.parameters})
    return builder(**params)


def check_range(key: str, value: Any, low: float, high: float, integer: bool = False) -> None:
    """Raise a ConfigError naming ``key`` unless ``low <= value <= high``."""
    kind = "a whole number" if integer else "a number"
    valid_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not valid_type or not low <= value <= high:
        raise ConfigError(f"{key}={value!r} is out of range; use {kind} from {low} to {high}.")
