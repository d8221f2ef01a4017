"""Policy files for aug=faster_aa: loading, AutoAlbument 0.4 conversion, bad files, the builder."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from fishaug.augment import build_augmentation
from fishaug.augment.albumentations_policies import AlbumentationsPolicy
from fishaug.augment.faster_aa.export import save_policy, summary_path
from fishaug.augment.faster_aa.policy import Policy
from fishaug.augment.faster_aa.policy_file import load_policy
from fishaug.errors import ConfigError, DataError

OLD = "albumentations.augmentations.transforms."


def old_transform(name: str, p: float, **arguments) -> dict:
    return {"__class_fullname__": OLD + name, "always_apply": False, "p": p, **arguments}


def old_shift_scale_rotate(p, shift_x=(0, 0), shift_y=(0, 0), scale=(0.0, 0.0), rotate=(0, 0)):
    return old_transform(
        "ShiftScaleRotate",
        p,
        shift_limit_x=list(shift_x),
        shift_limit_y=list(shift_y),
        scale_limit=list(scale),
        rotate_limit=list(rotate),
        interpolation=1,
        border_mode=4,
        value=None,
        mask_value=None,
    )


def old_coarse_dropout(p, holes, size):
    return old_transform(
        "CoarseDropout",
        p,
        max_holes=holes,
        max_height=size,
        max_width=size,
        min_holes=holes,
        min_height=size,
        min_width=size,
        fill_value=0,
        mask_fill_value=None,
    )


def old_stage(p: float) -> dict:
    """One stage of an AutoAlbument 0.4 policy: its 14 operations and a NoOp, values as it wrote them."""
    options = [
        old_transform(
            "RGBShift",
            p,
            r_shift_limit=[-211, -211],
            g_shift_limit=[-0.0, 0.0],
            b_shift_limit=[-0.0, 0.0],
        ),
        old_transform(
            "RGBShift",
            p,
            r_shift_limit=[-0.0, 0.0],
            g_shift_limit=[27, 27],
            b_shift_limit=[-0.0, 0.0],
        ),
        old_transform(
            "RGBShift",
            p,
            r_shift_limit=[-0.0, 0.0],
            g_shift_limit=[-0.0, 0.0],
            b_shift_limit=[-13, -13],
        ),
        old_transform(
            "RandomBrightnessContrast",
            p,
            brightness_limit=[0.8811554908752441] * 2,
            contrast_limit=[0, 0],
            brightness_by_max=True,
        ),
        old_transform(
            "RandomBrightnessContrast",
            p,
            brightness_limit=[0, 0],
            contrast_limit=[1.2194544076919556] * 2,
            brightness_by_max=True,
        ),
        old_transform("Solarize", p, threshold=[254, 254]),
        old_transform("HorizontalFlip", p),
        old_transform("VerticalFlip", p),
        old_shift_scale_rotate(p, rotate=[-49.80561828613281] * 2),
        old_shift_scale_rotate(p, shift_x=[-0.851999044418335] * 2),
        old_shift_scale_rotate(p, shift_y=[-0.06899046897888184] * 2),
        old_shift_scale_rotate(p, scale=[5.1183600425720215] * 2),
        old_coarse_dropout(p, 16, 31),
        old_coarse_dropout(p, 3, 2),
    ]
    no_op = {
        "__class_fullname__": "albumentations.core.transforms_interface.NoOp",
        "always_apply": False,
        "p": 1 - p * len(options),
    }
    return {
        "__class_fullname__": "albumentations.core.composition.OneOf",
        "p": 1,
        "transforms": [*options, no_op],
    }


def autoalbument_policy(stage_p: float = 0.05) -> dict:
    """A policy file as AutoAlbument 0.4 wrote it with Albumentations 0.5.1 (2 sub-policies of 2 stages)."""
    sub_policy = {
        "__class_fullname__": "albumentations.core.composition.Sequential",
        "p": 0.5,
        "transforms": [old_stage(stage_p), old_stage(stage_p)],
    }
    return {
        "__version__": "0.5.1",
        "transform": {
            "__class_fullname__": "albumentations.core.composition.Compose",
            "p": 1.0,
            "transforms": [
                {
                    "__class_fullname__": "albumentations.core.composition.OneOf",
                    "p": 1,
                    "transforms": [sub_policy, sub_policy],
                },
                old_transform(
                    "Normalize",
                    1.0,
                    mean=[0.485, 0.456, 0.406],
                    std=[0.229, 0.224, 0.225],
                    max_pixel_value=255,
                ),
                {
                    "__class_fullname__": "albumentations.pytorch.transforms.ToTensorV2",
                    "always_apply": True,
                    "p": 1.0,
                    "transpose_mask": True,
                },
            ],
            "bbox_params": None,
            "keypoint_params": None,
            "additional_targets": {},
        },
    }


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def small_policy_file(tmp_path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    return save_policy(Policy(num_sub_policies=3, num_stages=2), tmp_path / "policy.json")


def test_autoalbument_file_is_converted(tmp_path, caplog):
    path = write_json(tmp_path / "autoalbument.json", autoalbument_policy())
    with caplog.at_level(logging.WARNING):
        transform = load_policy(path)

    message = caplog.text
    for change in (
        "Converted policy file",
        "written with Albumentations 0.5.1",
        "always_apply removed",
        "Solarize: threshold in grey levels",
        "ShiftScaleRotate became Affine",
        "CoarseDropout: min_holes/max_holes became num_holes_range",
        "Normalize removed",
        "ToTensorV2 removed",
    ):
        assert change in message
    assert len(transform.transforms) == 1  # Normalize and ToTensorV2 are gone
    stage = transform.transforms[0].transforms[0].transforms[0]
    by_class = {}
    for option in stage.transforms:
        by_class.setdefault(type(option).__name__, []).append(option)
    assert by_class["Solarize"][0].threshold_range == pytest.approx((254 / 255, 254 / 255))
    scales = [t.scale["x"] for t in by_class["Affine"]]
    assert (6.1183600425720215, 6.1183600425720215) in [pytest.approx(s) for s in scales]
    rotations = [t.rotate for t in by_class["Affine"]]
    assert (-49.80561828613281, -49.80561828613281) in [pytest.approx(r) for r in rotations]
    dropout = by_class["CoarseDropout"][0]
    assert dropout.num_holes_range == (16, 16)
    assert dropout.hole_height_range == (31, 31)
    assert sum(t.p for t in stage.transforms) == pytest.approx(1.0)

    image = np.random.default_rng(0).integers(0, 256, size=(48, 48, 3), dtype=np.uint8)
    assert transform(image=image)["image"].shape == image.shape


def test_autoalbument_file_trains_through_builder(tmp_path):
    path = write_json(tmp_path / "autoalbument.json", autoalbument_policy(stage_p=0.07))
    augment = build_augmentation({"name": "faster_aa", "policy": str(path)}, seed=0)
    image = Image.fromarray(np.full((40, 40, 3), 120, dtype=np.uint8))
    assert augment(image).size == (40, 40)


def test_own_policy_file_loads_without_changes(tmp_path, caplog):
    path = small_policy_file(tmp_path)
    with caplog.at_level(logging.WARNING):
        transform = load_policy(path)
    assert caplog.text == ""
    reloaded = json.loads(json.dumps(A.to_dict(transform)))  # tuples become lists as in the file
    assert reloaded["transform"] == json.loads(path.read_text())["transform"]
    assert summary_path(path).is_file()


def test_yaml_policy_file_loads(tmp_path):
    data = json.loads(small_policy_file(tmp_path).read_text())
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data))
    assert isinstance(load_policy(path), A.Compose)


def test_missing_policy_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_policy(tmp_path / "nothing.json")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"transforms": []}', "is not an Albumentations pipeline"),
        ("[1, 2, 3]", "is not an Albumentations pipeline"),
        ('{"transform": {"p": 1.0}}', "is not an Albumentations pipeline"),
    ],
)
def test_file_that_is_no_pipeline(tmp_path, text, message):
    path = tmp_path / "policy.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_policy(path)


def test_unknown_transform(tmp_path):
    data = {
        "__version__": "2.0.8",
        "transform": {
            "__class_fullname__": "Compose",
            "p": 1.0,
            "transforms": [
                {"__class_fullname__": "IAAAffine", "p": 0.5},
            ],
        },
    }
    with pytest.raises(
        ConfigError, match=r"does not have: \['transform.transforms\[0\]: IAAAffine'\]"
    ):
        load_policy(write_json(tmp_path / "policy.json", data))


def test_argument_albumentations_would_ignore(tmp_path):
    data = {
        "__version__": "2.0.8",
        "transform": {
            "__class_fullname__": "Compose",
            "p": 1.0,
            "transforms": [
                {"__class_fullname__": "Solarize", "p": 0.5, "threshold": 128},
            ],
        },
    }
    with pytest.raises(ConfigError, match=r"does not accept and would ignore.*Solarize.*threshold"):
        load_policy(write_json(tmp_path / "policy.json", data))


def test_choice_probabilities_above_one_are_normalised(tmp_path, caplog):
    data = {
        "__version__": "2.0.8",
        "transform": {
            "__class_fullname__": "Compose",
            "p": 1.0,
            "transforms": [
                {
                    "__class_fullname__": "OneOf",
                    "p": 1.0,
                    "transforms": [
                        {"__class_fullname__": "HorizontalFlip", "p": 0.9},
                        {"__class_fullname__": "VerticalFlip", "p": 0.6},
                        {"__class_fullname__": "NoOp", "p": 0.0},
                    ],
                },
            ],
        },
    }
    with caplog.at_level(logging.WARNING):
        transform = load_policy(write_json(tmp_path / "policy.json", data))
    assert "probabilities that sum to 1.5, above 1; divided each by 1.5" in caplog.text
    assert "transform.transforms[0]" in caplog.text
    choice = transform.transforms[0]
    assert [t.p for t in choice.transforms] == pytest.approx([0.6, 0.4, 0.0])


@pytest.mark.parametrize("p", [1.5, -0.1, "often"])
def test_probability_out_of_range(tmp_path, p):
    data = {
        "__version__": "2.0.8",
        "transform": {
            "__class_fullname__": "Compose",
            "p": 1.0,
            "transforms": [
                {"__class_fullname__": "HorizontalFlip", "p": p},
            ],
        },
    }
    with pytest.raises(ConfigError, match=r"transform.transforms\[0\] \(HorizontalFlip\) has p="):
        load_policy(write_json(tmp_path / "policy.json", data))


def test_choice_that_can_choose_nothing(tmp_path):
    data = {
        "__version__": "2.0.8",
        "transform": {
            "__class_fullname__": "OneOf",
            "p": 1.0,
            "transforms": [
                {"__class_fullname__": "HorizontalFlip", "p": 0.0},
            ],
        },
    }
    with pytest.raises(ConfigError, match="sum to 0, so it can choose nothing"):
        load_policy(write_json(tmp_path / "policy.json", data))


def test_builder_requires_policy():
    with pytest.raises(ConfigError, match="aug.policy is not set"):
        build_augmentation({"name": "faster_aa", "policy": None}, seed=0)


def test_builder_missing_policy(tmp_path):
    with pytest.raises(ConfigError, match=r"aug.policy='.*nothing.json' does not exist"):
        build_augmentation({"name": "faster_aa", "policy": str(tmp_path / "nothing.json")}, seed=0)


def test_builder_same_seed_same_images(tmp_path):
    path = small_policy_file(tmp_path)
    images = [
        Image.fromarray(a)
        for a in np.random.default_rng(1).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    ]

    def run(seed):
        augment = build_augmentation({"name": "faster_aa", "policy": str(path)}, seed=seed)
        assert isinstance(augment, AlbumentationsPolicy)
        return [np.asarray(augment(image)) for image in images]

    first, again, other = run(5), run(5), run(6)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_builder_converts_grayscale_images_once(tmp_path, caplog):
    augment = build_augmentation(
        {"name": "faster_aa", "policy": str(small_policy_file(tmp_path))}, seed=0
    )
    gray = Image.fromarray(np.full((24, 24), 90, dtype=np.uint8), mode="L")
    with caplog.at_level(logging.WARNING):
        first = augment(gray)
        augment(gray)
    assert first.mode == "RGB"
    assert first.size == (24, 24)
    assert caplog.text.count("got a L image; converting it to RGB") == 1


def test_builder_rejects_policy_that_resizes(tmp_path):
    path = tmp_path / "resize.json"
    A.save(A.Compose([A.Resize(16, 16, p=1.0)]), str(path))
    augment = build_augmentation({"name": "faster_aa", "policy": str(path)}, seed=0)
    with pytest.raises(
        DataError, match=r"changed the image shape from \(32, 32, 3\) to \(16, 16, 3\)"
    ):
        augment(Image.new("RGB", (32, 32)))
