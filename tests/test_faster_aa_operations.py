"""Faster AutoAugment operations and policy: gradients, agreement with Albumentations, export."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch

from fishaug.augment.faster_aa.operations import OPERATIONS
from fishaug.augment.faster_aa.policy import Policy


def fish_like_images(count: int = 4, size: int = 32, seed: int = 0) -> np.ndarray:
    """Letterbox-like uint8 images (count, size, size, 3): a textured ellipse on black bars."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size]
    images = np.zeros((count, size, size, 3), dtype=np.uint8)
    for i in range(count):
        inside = ((rows - size / 2) / (size * 0.22)) ** 2 + (
            (cols - size / 2) / (size * 0.45)
        ) ** 2 < 1
        colour = rng.integers(40, 220, size=3)
        noise = rng.normal(0, 25, size=(size, size, 3))
        body = np.clip(colour + noise + 30 * np.sin(cols / 3)[..., None], 0, 255)
        images[i][inside] = body[inside].astype(np.uint8)
        images[i][: size // 8] = 0  # letterbox bar
    return images


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.tensor(images).permute(0, 3, 1, 2).float() / 255


@pytest.mark.parametrize("name", sorted(OPERATIONS))
@pytest.mark.parametrize("magnitude", [0.15, 0.85])
def test_operation_matches_albumentations(name, magnitude):
    operation = OPERATIONS[name]
    images = fish_like_images()
    magnitudes = torch.full((len(images),), magnitude) if operation.has_magnitude else None
    with torch.no_grad():
        ours = operation(to_tensor(images), magnitudes).permute(0, 2, 3, 1).numpy() * 255
    value = float(operation.value(torch.tensor(magnitude))) if operation.has_magnitude else None
    transform = A.Compose([operation.to_albumentations(value, p=1.0)], seed=0)
    reference = np.stack([transform(image=image)["image"] for image in images]).astype(float)

    if name.startswith("cutout"):
        # Hole positions are random in both; compare how much of the image turns black.
        black_ours = (ours.max(axis=-1) == 0).mean()
        black_reference = (reference.max(axis=-1) == 0).mean()
        assert black_ours == pytest.approx(black_reference, abs=0.06)
    elif name.startswith("shift_") and name[-1] in "xy":
        # Albumentations shifts by whole pixels, the search by fractions of one.
        assert np.abs(ours - reference).mean() < 8
    else:
        assert np.abs(ours - reference).mean() < 1.5
        assert np.mean(np.abs(ours - reference) > 3) < 0.01


def test_gradients_reach_every_probability_and_magnitude():
    torch.manual_seed(0)
    policy = Policy(num_sub_policies=1, num_stages=2, num_chunks=1, temperature=0.5)
    with torch.no_grad():
        policy._probabilities.fill_(0.5)
        policy._magnitudes.fill_(0.4)
    images = to_tensor(fish_like_images(count=16))
    target = torch.rand_like(images)

    ((policy(images) - target) ** 2).mean().backward()

    for grad, kind in (
        (policy._probabilities.grad, "probability"),
        (policy._weights.grad, "weight"),
    ):
        assert torch.isfinite(grad).all()
        missing = [
            f"stage {s} {name}"
            for s in range(2)
            for k, name in enumerate(policy.operation_names)
            if grad[0, s, k] == 0
        ]
        assert missing == [], f"no gradient for the {kind} of {missing}"
    magnitude_grad = policy._magnitudes.grad
    assert torch.isfinite(magnitude_grad).all()
    missing = [
        f"stage {s} {name}"
        for s in range(2)
        for k, name in enumerate(policy.operation_names)
        if OPERATIONS[name].has_magnitude and magnitude_grad[0, s, k] == 0
    ]
    assert missing == [], f"no gradient for the magnitude of {missing}"


def test_policy_keeps_images_in_range_and_shape():
    torch.manual_seed(1)
    policy = Policy(num_sub_policies=3, num_stages=2, num_chunks=2)
    images = to_tensor(fish_like_images(count=6))
    output = policy(images)
    assert output.shape == images.shape
    assert output.min() >= 0
    assert output.max() <= 1


def test_policy_rejects_grayscale_tensors():
    policy = Policy(num_sub_policies=1, num_stages=1)
    with pytest.raises(ValueError, match=r"Expected float RGB images of shape \(B, 3, H, W\)"):
        policy(torch.rand(2, 1, 16, 16))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_chunks": 0}, "num_chunks=0 is out of range"),
        ({"num_stages": 1.5}, "num_stages=1.5 is out of range"),
        ({"temperature": 0.0}, "temperature=0.0 is out of range"),
        ({"operations": ["rotate", "blur"]}, "is not valid; list one or more of"),
        ({"operations": ["rotate", "rotate"]}, "lists an operation twice"),
    ],
)
def test_policy_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Policy(**kwargs)


def test_export_probabilities_sum_to_one_per_stage():
    torch.manual_seed(2)
    policy = Policy(num_sub_policies=3, num_stages=2)
    transform = policy.to_albumentations()
    (sub_policies,) = transform.transforms
    assert len(sub_policies.transforms) == 3
    for sub_policy in sub_policies.transforms:
        assert len(sub_policy.transforms) == 2
        for stage in sub_policy.transforms:
            assert len(stage.transforms) == len(OPERATIONS) + 1
            assert isinstance(stage.transforms[-1], A.NoOp)
            assert sum(t.p for t in stage.transforms) == pytest.approx(1.0)


# Albumentations 2.0.8 writes RGBShift's base-class arguments and warns when reading them back.
@pytest.mark.filterwarnings("ignore:Argument\\(s\\) 'approximation")
def test_export_save_load_gives_identical_outputs(tmp_path):
    torch.manual_seed(3)
    transform = Policy(num_sub_policies=4, num_stages=3).to_albumentations()
    path = tmp_path / "policy.json"
    A.save(transform, str(path))
    loaded = A.load(str(path))

    assert A.to_dict(loaded) == A.to_dict(transform)
    images = fish_like_images(count=8)
    transform.set_random_seed(7)
    loaded.set_random_seed(7)
    for image in images:
        np.testing.assert_array_equal(transform(image=image)["image"], loaded(image=image)["image"])
