"""The differentiable policy: sub-policies of stages, each stage a softmax-weighted operation mix.

In Faster AutoAugment (Hataya et al., 2020, section 3.2) a policy is a set of sub-policies. A
sub-policy applies its stages in turn, and a stage applies a mix of all operations weighted by
a softmax over learnable weights. During the search a batch is split into chunks and each chunk
goes through one sub-policy drawn at random. For training, the policy is exported as an
Albumentations pipeline (:meth:`Policy.to_albumentations`) that picks one sub-policy per image
and, in each stage, one operation with probability ``weight * probability``.
"""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import torch
from torch import nn
from torch.distributions import RelaxedBernoulli

from fishaug.augment.faster_aa import functional as AF
from fishaug.augment.faster_aa.operations import OPERATIONS, Operation

# Every operation, in the order of the table in the operations module.
DEFAULT_OPERATIONS = tuple(OPERATIONS)

Choice = tuple[Operation, float | None, float]


class Policy(nn.Module):
    """A Faster AutoAugment policy over images in [0, 1].

    The learnable parameters are three tensors of shape (num_sub_policies, num_stages,
    num_operations): each operation's probability and magnitude in every stage, both kept in
    [0, 1], and the stage weights, whose softmax (at ``temperature``) mixes the operations.
    Keeping them as tensors lets one call of each operation serve the whole batch, with each
    image's parameters gathered from its sub-policy.

    Args:
        operations: names from :data:`~fishaug.augment.faster_aa.operations.OPERATIONS`.
        num_sub_policies: sub-policies to choose from.
        num_stages: stages per sub-policy (AutoAlbument's ``operation_count``).
        num_chunks: chunks a batch is split into during the search; each chunk goes through one
            sub-policy drawn at random.
        temperature: temperature of the relaxed Bernoulli draws and of the stage softmax.

    Raises:
        ValueError: a count is below 1, the temperature is not positive, or an operation name
            is unknown or repeated.
    """

    def __init__(
        self,
        operations: Sequence[str] = DEFAULT_OPERATIONS,
        num_sub_policies: int = 40,
        num_stages: int = 4,
        num_chunks: int = 4,
        temperature: float = 0.05,
    ):
        super().__init__()
        for key, value in (
            ("num_sub_policies", num_sub_policies),
            ("num_stages", num_stages),
            ("num_chunks", num_chunks),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"{key}={value!r} is out of range; use a whole number of 1 or more."
                )
        if not temperature > 0:
            raise ValueError(f"temperature={temperature!r} is out of range; use a number above 0.")
        names = list(operations)
        unknown = sorted(set(names) - set(OPERATIONS))
        if not names or unknown:
            raise ValueError(
                f"operations={names} is not valid; list one or more of {sorted(OPERATIONS)}."
            )
        if len(set(names)) != len(names):
            raise ValueError(f"operations={names} lists an operation twice; list each once.")

        self.operation_names = names
        self.operations = [OPERATIONS[name] for name in names]
        self.num_sub_policies = num_sub_policies
        self.num_stages = num_stages
        self.num_chunks = num_chunks
        self.temperature = float(temperature)
        shape = (num_sub_policies, num_stages, len(names))
        self._probabilities = nn.Parameter(torch.empty(shape))
        self._magnitudes = nn.Parameter(torch.empty(shape))
        self._weights = nn.Parameter(torch.empty(shape))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Draw every probability, magnitude and stage weight uniformly from [0, 1].

        This is AutoAlbument's initialisation; the global torch seed makes it repeatable.
        """
        for parameter in (self._probabilities, self._magnitudes, self._weights):
            parameter.uniform_(0, 1)

    @property
    def probabilities(self) -> torch.Tensor:
        """Probability of each operation in each stage, (sub-policies, stages, operations)."""
        return self._probabilities.clamp(0, 1)

    @property
    def magnitudes(self) -> torch.Tensor:
        """Magnitude in [0, 1] of each operation in each stage; unused where it has none."""
        return self._magnitudes.clamp(0, 1)

    @property
    def weights(self) -> torch.Tensor:
        """Softmax weights of the operations in each stage; they sum to 1 over operations."""
        return (self._weights / self.temperature).softmax(dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Augment images (B, 3, H, W) in [0, 1]: each chunk through a random sub-policy."""
        AF.check_images(images)
        sizes = [len(chunk) for chunk in torch.arange(images.shape[0]).chunk(self.num_chunks)]
        choices = torch.randint(self.num_sub_policies, (len(sizes),))
        sub_policy = choices.repeat_interleave(torch.tensor(sizes)).to(images.device)
        # Each image's parameters, (B, stages, operations).
        probabilities = self.probabilities[sub_policy]
        magnitudes = self.magnitudes[sub_policy]
        weights = self.weights[sub_policy]
        for stage in range(self.num_stages):
            images = self.apply_stage(
                images, probabilities[:, stage], magnitudes[:, stage], weights[:, stage]
            )
        return images

    def apply_stage(
        self,
        images: torch.Tensor,
        probabilities: torch.Tensor,
        magnitudes: torch.Tensor,
        weights: torch.Tensor,
    ) -> torch.Tensor:
        """Apply one stage with per-image parameters (B, operations) to images (B, 3, H, W).

        The output is ``sum_k weight_k * (b_k * op_k(x) + (1 - b_k) * x)`` with a relaxed
        Bernoulli draw ``b_k`` per image and operation (Faster AutoAugment, section 3.1). As the
        weights sum to 1 this equals ``x + sum_k weight_k * b_k * (op_k(x) - x)``, which needs
        fewer full-size tensor operations.
        """
        temperature = images.new_tensor(self.temperature)
        masks = RelaxedBernoulli(temperature, probs=probabilities).rsample()
        coefficients = weights * masks

        output = images
        for k, operation in enumerate(self.operations):
            augmented = operation(images, magnitudes[:, k] if operation.has_magnitude else None)
            output = output + AF.per_image(coefficients[:, k]) * (augmented - images)
        return output

    @torch.no_grad()
    def project_(self) -> None:
        """Clip probabilities and magnitudes back into [0, 1] after an optimiser step.

        NOTE: the reference implementations only clamp when reading the parameters, so a
        parameter that an update pushes past 0 or 1 never gets a gradient again. Projecting
        keeps it on the boundary, where the clamp still passes gradients.
        """
        self._probabilities.clamp_(0, 1)
        self._magnitudes.clamp_(0, 1)

    @torch.no_grad()
    def stage_choices(self, sub_policy: int, stage: int) -> list[Choice]:
        """``(operation, value or None, p)`` for each operation of one stage.

        ``p = weight * probability`` is the chance that the stage applies the operation; the
        stage applies none with the remaining probability.
        """
        probabilities = (self.weights * self.probabilities)[sub_policy, stage].tolist()
        magnitudes = self.magnitudes[sub_policy, stage]
        return [
            (
                operation,
                float(operation.value(magnitudes[k])) if operation.has_magnitude else None,
                probabilities[k],
            )
            for k, operation in enumerate(self.operations)
        ]

    def to_albumentations(self) -> A.Compose:
        """Export the policy at its current parameters as an Albumentations pipeline.

        The pipeline works on uint8 RGB images of any size and keeps their size: one
        sub-policy per image, chosen uniformly (OneOf of Sequential), then in each stage one
        operation with probability ``weight * probability`` or none (OneOf with a NoOp). The
        layout follows AutoAlbument's policy files, without the Normalize and ToTensorV2 steps,
        because fishaug normalises after augmenting.
        """
        sub_policies = []
        for index in range(self.num_sub_policies):
            stages = []
            for stage in range(self.num_stages):
                choices = self.stage_choices(index, stage)
                transforms = [op.to_albumentations(value, p) for op, value, p in choices]
                # The weights sum to 1 and each probability is at most 1, so the remainder
                # is not negative, up to rounding.
                remainder = max(0.0, 1.0 - sum(p for _, _, p in choices))
                transforms.append(A.NoOp(p=remainder))
                stages.append(A.OneOf(transforms, p=1.0))
            sub_policies.append(A.Sequential(stages, p=1.0 / self.num_sub_policies))
        return A.Compose([A.OneOf(sub_policies, p=1.0)])
