"""Reading policy files: Albumentations pipelines saved with ``A.save``, old ones converted.

AutoAlbument 0.4 wrote its policies with Albumentations 0.5: full class paths such as
``albumentations.augmentations.transforms.Solarize``, an ``always_apply`` flag, and argument
names that Albumentations 2 no longer accepts. Albumentations 2.0.8 loads such a file without
an error but drops the unknown arguments with only a warning, so a Solarize threshold of 254
silently becomes the default 0.5 and every CoarseDropout falls back to its default holes.
:func:`load_policy` therefore converts files written before Albumentations 2 and logs what
changed, and refuses arguments that are still unknown after the conversion.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import albumentations as A
import yaml

from fishaug.errors import ConfigError

log = logging.getLogger(__name__)

Node = dict[str, Any]

# Steps that turn an augmented image into a normalised tensor. fishaug applies a policy to
# images and normalises afterwards with the training split's statistics, so they are removed.
TENSOR_STEPS = {
    "Normalize": "fishaug normalises images itself, after augmenting",
    "ToTensorV2": "the policy returns images and fishaug converts them to tensors",
    "ToTensor": "the policy returns images and fishaug converts them to tensors",
}
# Compositions whose children's p are choice weights, which in a policy are probabilities.
CHOICES = {"OneOf"}
PROBABILITY_TOLERANCE = 1e-6


def load_policy(path: str | Path) -> A.Compose:
    """Load an Albumentations pipeline file (JSON or YAML) as a Compose to augment images with.

    Files written before Albumentations 2 are converted (see :func:`convert_legacy`);
    Normalize and ToTensorV2 steps are removed; a choice (OneOf) whose probabilities sum to
    more than 1 is normalised to sum 1. Each of these logs a warning that lists what changed.

    Raises:
        ConfigError: the file does not exist, is not JSON or YAML, is not an Albumentations
            pipeline, names a transform or argument that Albumentations does not know, or has
            a probability outside [0, 1].
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"Policy file '{path}' does not exist. Use the policy.json of a search run "
            "(python search.py) or a pipeline file saved with albumentations.save."
        )
    data = read_pipeline(path)
    version = str(data.get("__version__", "unknown"))

    changes: Counter[str] = Counter()
    if is_legacy(version):
        data = convert_legacy(data, changes)
    remove_tensor_steps(data["transform"], changes)
    if changes:
        log.warning(
            "Converted policy file '%s' (written with Albumentations %s) for Albumentations %s: %s",
            path,
            version,
            A.__version__,
            "; ".join(
                f"{change} ({count}x)" if count > 1 else change for change, count in changes.items()
            ),
        )
    check_probabilities(data["transform"], "transform", path)

    transform = build_pipeline(data, path)
    if not isinstance(transform, A.Compose):
        transform = A.Compose([transform])
    return transform


def read_pipeline(path: Path) -> Node:
    """Read a pipeline file and check that it has A.save's layout.

    Raises:
        ConfigError: the file is not valid JSON or YAML, or has no ``transform`` entry with a
            ``__class_fullname__``.
    """
    text = path.read_text(encoding="utf-8", errors="replace")
    is_yaml = path.suffix.lower() in (".yaml", ".yml")
    try:
        data = yaml.safe_load(text) if is_yaml else json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        kind = "YAML" if is_yaml else "JSON"
        raise ConfigError(
            f"Policy file '{path}' is not valid {kind} ({error}). Expected an Albumentations "
            "pipeline saved with albumentations.save."
        ) from error
    transform = data.get("transform") if isinstance(data, dict) else None
    if not isinstance(transform, dict) or not isinstance(transform.get("__class_fullname__"), str):
        raise ConfigError(
            f"Policy file '{path}' is not an Albumentations pipeline: it has no 'transform' "
            "entry with a '__class_fullname__', the layout that albumentations.save writes."
        )
    return data


def is_legacy(version: str) -> bool:
    """Return True for files written before Albumentations 2, or without a version."""
    major = version.split(".")[0]
    return not major.isdigit() or int(major) < 2


def short_name(class_fullname: str) -> str:
    """Return the class name of ``albumentations.<module>.<Class>``; other names unchanged."""
    if class_fullname.startswith("albumentations."):
        return class_fullname.rsplit(".", 1)[-1]
    return class_fullname


def walk(node: Node, visit: Callable[[Node, str], None], location: str = "transform") -> None:
    """Call ``visit(node, location)`` on ``node`` and every transform below it, parents first."""
    visit(node, location)
    for index, child in enumerate(node.get("transforms") or []):
        if isinstance(child, dict):
            walk(child, visit, f"{location}.transforms[{index}]")


def convert_legacy(data: Node, changes: Counter[str]) -> Node:
    """Return a copy of an Albumentations 0.5/1.x pipeline dict in Albumentations 2 terms.

    Counts each kind of change in ``changes``. The conversions:

    - class paths (``albumentations.augmentations.transforms.X``) become class names;
    - ``always_apply`` is removed (``always_apply: true`` becomes ``p: 1``);
    - Solarize ``threshold`` (grey levels 0 to 255, or 0 to 1 for float images) becomes
      ``threshold_range`` in [0, 1];
    - CoarseDropout ``min/max_holes``, ``min/max_height``, ``min/max_width``, ``fill_value``
      and ``mask_fill_value`` become ``num_holes_range``, ``hole_height_range``,
      ``hole_width_range``, ``fill`` and ``fill_mask``; the removed Cutout becomes
      CoarseDropout;
    - ShiftScaleRotate becomes the equivalent Affine (``scale = 1 + scale_limit``);
    - ``value`` and ``mask_value`` of other transforms become ``fill`` and ``fill_mask``;
    - RGBShift limits written for float images (within [-1, 1], not whole numbers) are
      converted to grey levels, the unit Albumentations 2 uses for every image type.

    NOTE: Albumentations 0.5 rotated and scaled about ``(W / 2, H / 2)`` and shifted by
    fractions of a pixel. Albumentations 2 uses ``(W / 2 - 0.5, H / 2 - 0.5)`` and whole pixels,
    so converted geometric transforms can differ by up to a pixel.
    """
    data = copy.deepcopy(data)
    path_change: list[str] = []

    def visit(node: Node, location: str) -> None:
        fullname = node["__class_fullname__"]
        name = short_name(fullname)
        if name != fullname:
            node["__class_fullname__"] = name
            if not path_change:
                path_change.append(f"class paths such as {fullname} shortened to class names")
            changes[path_change[0]] += 1
        if "always_apply" in node:
            if node.pop("always_apply") is True and node.get("p", 1.0) != 1.0:
                node["p"] = 1.0
                changes[f"{name}: always_apply=true became p=1"] += 1
            changes["always_apply removed"] += 1
        converter = LEGACY_CONVERTERS.get(name)
        if converter is not None:
            converter(node, changes)
        elif "value" in node or "mask_value" in node:
            rename_fill(node, name, changes)

    walk(data["transform"], visit)
    data["__version__"] = A.__version__
    return data


def rename_fill(node: Node, name: str, changes: Counter[str]) -> None:
    for old, new in (("value", "fill"), ("mask_value", "fill_mask")):
        if old in node:
            value = node.pop(old)
            if value is not None:
                node[new] = value
            changes[f"{name}: {old} renamed {new}"] += 1


def convert_solarize(node: Node, changes: Counter[str]) -> None:
    if "threshold" not in node:
        return
    threshold = node.pop("threshold")
    low, high = threshold if isinstance(threshold, list | tuple) else (threshold, threshold)
    if max(low, high) > 1:
        low, high = low / 255, high / 255
        changes[
            "Solarize: threshold in grey levels (0 to 255) became threshold_range in [0, 1]"
        ] += 1
    else:
        changes["Solarize: threshold became threshold_range"] += 1
    node["threshold_range"] = [min(low, 1.0), min(high, 1.0)]


def convert_coarse_dropout(node: Node, changes: Counter[str]) -> None:
    for low_key, high_key, new_key in (
        ("min_holes", "max_holes", "num_holes_range"),
        ("min_height", "max_height", "hole_height_range"),
        ("min_width", "max_width", "hole_width_range"),
    ):
        if high_key in node or low_key in node:
            high = node.pop(high_key, None)
            low = node.pop(low_key, None)
            low = high if low is None else low
            high = low if high is None else high
            node[new_key] = [low, high]
            changes[f"CoarseDropout: {low_key}/{high_key} became {new_key}"] += 1
    for old, new in (("fill_value", "fill"), ("mask_fill_value", "fill_mask")):
        if old in node:
            value = node.pop(old)
            if value is not None:
                node[new] = value
            changes[f"CoarseDropout: {old} renamed {new}"] += 1


def convert_cutout(node: Node, changes: Counter[str]) -> None:
    holes = node.pop("num_holes", 8)
    height = node.pop("max_h_size", 8)
    width = node.pop("max_w_size", 8)
    node["__class_fullname__"] = "CoarseDropout"
    node["num_holes_range"] = [holes, holes]
    node["hole_height_range"] = [height, height]
    node["hole_width_range"] = [width, width]
    if "fill_value" in node:
        node["fill"] = node.pop("fill_value")
    changes["Cutout (removed in Albumentations 2) became CoarseDropout"] += 1


def _limit(value: Any, default: float = 0.0, bias: float = 0.0) -> list[float]:
    """Turn an Albumentations limit (a number ``v`` meaning ``(-v, v)``, or a pair) into a pair."""
    if value is None:
        value = default
    low, high = value if isinstance(value, list | tuple) else (-value, value)
    return [low + bias, high + bias]


def convert_shift_scale_rotate(node: Node, changes: Counter[str]) -> None:
    shift = node.pop("shift_limit", 0.0625)
    shift_x = node.pop("shift_limit_x", None)
    shift_y = node.pop("shift_limit_y", None)
    affine: Node = {
        "__class_fullname__": "Affine",
        "p": node.get("p", 0.5),
        "translate_percent": {
            "x": _limit(shift if shift_x is None else shift_x),
            "y": _limit(shift if shift_y is None else shift_y),
        },
        "scale": _limit(node.pop("scale_limit", 0.1), bias=1.0),
        "rotate": _limit(node.pop("rotate_limit", 45)),
        "shear": [0.0, 0.0],
        "interpolation": node.pop("interpolation", 1),
        "border_mode": node.pop("border_mode", 4),
    }
    value, mask_value = node.pop("value", None), node.pop("mask_value", None)
    affine["fill"] = 0 if value is None else value
    affine["fill_mask"] = 0 if mask_value is None else mask_value
    node.clear()
    node.update(affine)
    changes["ShiftScaleRotate became Affine (scale = 1 + scale_limit)"] += 1


def convert_rgb_shift(node: Node, changes: Counter[str]) -> None:
    keys = ("r_shift_limit", "g_shift_limit", "b_shift_limit")
    limits = [_limit(node[key]) for key in keys if key in node]
    values = [v for pair in limits for v in pair if v != 0]
    if values and all(abs(v) <= 1 for v in values) and any(v != int(v) for v in values):
        for key in keys:
            if key in node:
                node[key] = [v * 255 for v in _limit(node[key])]
        changes["RGBShift: limits for float images (0 to 1) converted to grey levels"] += 1


LEGACY_CONVERTERS: dict[str, Callable[[Node, Counter[str]], None]] = {
    "Solarize": convert_solarize,
    "CoarseDropout": convert_coarse_dropout,
    "Cutout": convert_cutout,
    "ShiftScaleRotate": convert_shift_scale_rotate,
    "RGBShift": convert_rgb_shift,
}


def remove_tensor_steps(node: Node, changes: Counter[str]) -> None:
    """Remove Normalize and ToTensorV2 steps anywhere in the pipeline, counting them."""

    def visit(parent: Node, location: str) -> None:
        children = parent.get("transforms")
        if not children:
            return
        kept = []
        for child in children:
            name = (
                short_name(child.get("__class_fullname__", "")) if isinstance(child, dict) else ""
            )
            if name in TENSOR_STEPS:
                changes[f"{name} removed: {TENSOR_STEPS[name]}"] += 1
            else:
                kept.append(child)
        parent["transforms"] = kept

    walk(node, visit)


def check_probabilities(node: Node, location: str, path: Path) -> None:
    """Check every ``p`` is in [0, 1] and normalise choices whose probabilities sum above 1.

    Raises:
        ConfigError: a ``p`` is not a number from 0 to 1, or a choice's probabilities sum to 0.
    """

    def visit(child: Node, where: str) -> None:
        name = short_name(child["__class_fullname__"])
        p = child.get("p", 1.0)
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
            raise ConfigError(
                f"Policy file '{path}': {where} ({name}) has p={p!r}; a probability must be "
                "a number from 0 to 1."
            )
        if name not in CHOICES:
            return
        options = [t for t in child.get("transforms") or [] if isinstance(t, dict)]
        probabilities = [t.get("p", 1.0) for t in options]
        if not all(isinstance(q, int | float) and 0 <= q <= 1 for q in probabilities):
            return  # reported with the child's own location when the walk reaches it
        total = sum(probabilities)
        if options and total <= 0:
            raise ConfigError(
                f"Policy file '{path}': the choice at {where} ({name}) has probabilities that "
                "sum to 0, so it can choose nothing; give at least one option a p above 0."
            )
        if total > 1 + PROBABILITY_TOLERANCE:
            for option in options:
                option["p"] = option.get("p", 1.0) / total
            log.warning(
                "Policy file '%s': the choice at %s (%s) has probabilities that sum to %.4g, "
                "above 1; divided each by %.4g so that they sum to 1.",
                path,
                where,
                name,
                total,
                total,
            )

    walk(node, visit, location)


def accepted_arguments(cls: type) -> set[str]:
    """Return the ``__init__`` parameters of ``cls`` and of its base classes.

    ``A.save`` also writes the arguments of a transform's base classes. For example RGBShift,
    a kind of additive noise, writes ``noise_params``. The transform rebuilds them from its own
    arguments, so loading may skip them.
    """
    names: set[str] = set()
    for base in cls.__mro__:
        init = base.__dict__.get("__init__")
        if init is not None:
            names.update(inspect.signature(init).parameters)
    return names - {"self", "args", "kwargs"}


def build_pipeline(data: Node, path: Path) -> Any:
    """Build the transforms with ``A.from_dict``, turning its silent fallbacks into errors.

    Raises:
        ConfigError: a transform is not in the installed Albumentations, or has arguments that
            neither it nor its base classes accept (Albumentations would ignore them with only
            a warning).
    """
    unknown: list[str] = []
    ignored: list[str] = []

    def visit(node: Node, where: str) -> None:
        name = short_name(node["__class_fullname__"])
        cls = getattr(A, name, None)
        if not isinstance(cls, type):
            unknown.append(f"{where}: {node['__class_fullname__']}")
            return
        extra = sorted(set(node) - accepted_arguments(cls) - {"__class_fullname__", "transforms"})
        if extra:
            ignored.append(f"{where} ({name}): {', '.join(extra)}")

    walk(data["transform"], visit)
    if unknown:
        raise ConfigError(
            f"Policy file '{path}' uses transforms that Albumentations {A.__version__} does not "
            f"have: {unknown[:5]}. Replace them with current transforms or remove them."
        )
    if ignored:
        raise ConfigError(
            f"Policy file '{path}' has arguments that Albumentations {A.__version__} does not "
            f"accept and would ignore: {ignored[:5]}. Rename them to the current arguments or "
            "remove them."
        )

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            transform = A.from_dict(data)
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(
                f"Policy file '{path}' has invalid transform arguments for Albumentations "
                f"{A.__version__}: {error}"
            ) from error
    # Arguments of base classes were checked above and are rebuilt by the transforms.
    messages = {
        str(w.message) for w in caught if "are not valid for transform" not in str(w.message)
    }
    for message in sorted(messages):
        log.warning("Albumentations, loading '%s': %s", path, message)
    return transform
