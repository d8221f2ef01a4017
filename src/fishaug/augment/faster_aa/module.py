"""The search LightningModule: a classifier with a critic head, trained against the policy.

Faster AutoAugment (Hataya et al., 2020, section 3.3) searches a policy by density matching.
A critic learns to tell augmented from real images (WGAN-GP, Gulrajani et al., 2017) and the
policy learns to fool it. A classification loss, weighted by ``task_factor``, keeps augmented
images recognisable as their class.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from fishaug.augment.faster_aa.policy import Policy
from fishaug.models.backbones import build_backbone

log = logging.getLogger(__name__)

OptimizerFactory = Callable[..., torch.optim.Optimizer]


class CriticClassifier(nn.Module):
    """A torchvision ResNet whose features feed a class head and a critic head.

    The critic head is ``Linear(F, F) -> ReLU -> Linear(F, 1)`` as in the reference code of
    Faster AutoAugment; ``forward`` returns ``(logits (B, C), critic scores (B,))``.
    """

    def __init__(self, arch: str, num_classes: int, weights_path: str | None = None):
        super().__init__()
        backbone = build_backbone(arch, num_classes, weights_path)
        num_features = backbone.fc.in_features
        self.classifier = backbone.fc
        backbone.fc = nn.Identity()
        self.backbone = backbone
        self.critic = nn.Sequential(
            nn.Linear(num_features, num_features), nn.ReLU(), nn.Linear(num_features, 1)
        )

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(images)
        return self.classifier(features), self.critic(features).view(-1)


class FasterAutoAugmentSearch(L.LightningModule):
    """Alternate critic and policy updates on each training batch.

    Each batch of normalised images is split in two halves: one is augmented by the policy,
    the other serves as real images. Per batch the critic-classifier takes one step on
    ``task_factor * CE(real) + mean D(augmented) - mean D(real) + gp_factor * GP``, then the
    policy takes one step on ``task_factor * CE(augmented) - mean D(augmented)``.

    Args:
        policy: the policy to search.
        net: the classifier with a critic head.
        mean, std: per-channel normalisation of the loader's images, in [0, 1] units; the
            policy works on un-normalised images.
        task_factor: weight of the classification loss (AutoAlbument's ``task_factor``).
        gp_factor: weight of the gradient penalty.
        main_optimizer, policy_optimizer: factories taking ``params``.
    """

    def __init__(
        self,
        policy: Policy,
        net: CriticClassifier,
        mean: Sequence[float],
        std: Sequence[float],
        main_optimizer: OptimizerFactory,
        policy_optimizer: OptimizerFactory,
        task_factor: float = 0.1,
        gp_factor: float = 10.0,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.policy = policy
        self.net = net
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1))
        self.main_optimizer_factory = main_optimizer
        self.policy_optimizer_factory = policy_optimizer
        self.task_factor = float(task_factor)
        self.gp_factor = float(gp_factor)

        # Epoch means of the losses, one dict per finished epoch, and image counts for the
        # throughput.
        self.history: list[dict[str, float]] = []
        self.images_seen = 0
        self.search_seconds = 0.0
        self._sums: dict[str, float] = {}
        self._batches = 0
        self._epoch_images = 0
        self._epoch_started = 0.0

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [
            self.main_optimizer_factory(params=self.net.parameters()),
            self.policy_optimizer_factory(params=self.policy.parameters()),
        ]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images * self.std + self.mean).clamp(0, 1)

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """Run normalised images through the policy and return them normalised again."""
        return self.normalize(self.policy(self.denormalize(images)))

    def gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """WGAN-GP penalty (Gulrajani et al., 2017, eq. 3) on random interpolates.

        NOTE: the reference code takes the gradient norm over the channels of each pixel. This
        takes it over each whole image, as the WGAN-GP paper defines it.
        """
        alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
        interpolated = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        _, scores = self.net(interpolated)
        (gradient,) = torch.autograd.grad(
            outputs=scores.sum(), inputs=interpolated, create_graph=True
        )
        return (gradient.flatten(1).norm(2, dim=1) - 1).pow(2).mean()

    def training_step(self, batch: tuple, batch_idx: int) -> None:
        images, targets, _ = batch
        half = images.shape[0] // 2
        augment_images, augment_targets = images[:half], targets[:half]
        real_images, real_targets = images[half : 2 * half], targets[half : 2 * half]
        main_optimizer, policy_optimizer = self.optimizers()

        # NOTE: one policy forward serves both steps. The reference code augments the batch
        # again for the policy step; reusing the images saves one of two policy forwards.
        augmented = self.augment(augment_images)

        # Critic and classifier step; the policy is fixed.
        self.net.requires_grad_(True)
        main_optimizer.zero_grad()
        logits, real_scores = self.net(real_images)
        task_loss = self.task_factor * F.cross_entropy(logits, real_targets)
        _, fake_scores = self.net(augmented.detach())
        penalty = self.gp_factor * self.gradient_penalty(real_images, augmented.detach())
        critic_loss = fake_scores.mean() - real_scores.mean() + penalty
        self.manual_backward(task_loss + critic_loss)
        main_optimizer.step()

        # Policy step; the critic and classifier are fixed.
        self.net.requires_grad_(False)
        policy_optimizer.zero_grad()
        augmented_logits, augmented_scores = self.net(augmented)
        policy_task_loss = self.task_factor * F.cross_entropy(augmented_logits, augment_targets)
        policy_loss = policy_task_loss - augmented_scores.mean()
        self.manual_backward(policy_loss)
        policy_optimizer.step()
        self.policy.project_()
        self.net.requires_grad_(True)

        with torch.no_grad():
            values = {
                "task_loss": float(task_loss + policy_task_loss),
                "critic_loss": float(critic_loss),
                "policy_loss": float(policy_loss),
                "gradient_penalty": float(penalty),
                "wasserstein": float(real_scores.mean() - fake_scores.mean()),
            }
        for key, value in values.items():
            self._sums[key] = self._sums.get(key, 0.0) + value
        self._batches += 1
        self._epoch_images += 2 * half
        progress_keys = ("critic_loss", "policy_loss")
        self.log_dict({f"search/{k}": values[k] for k in progress_keys}, prog_bar=True)
        self.log_dict({f"search/{k}": v for k, v in values.items() if k not in progress_keys})

    def on_train_epoch_start(self) -> None:
        self._sums, self._batches, self._epoch_images = {}, 0, 0
        self._epoch_started = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        if self._batches == 0:
            return
        seconds = time.perf_counter() - self._epoch_started
        self.images_seen += self._epoch_images
        self.search_seconds += seconds
        record: dict[str, Any] = {"epoch": self.current_epoch + 1}
        record.update({key: value / self._batches for key, value in self._sums.items()})
        record["images_per_s"] = self._epoch_images / seconds if seconds > 0 else float("nan")
        self.history.append(record)
        log.info(
            "Epoch %d: task loss %.4f, critic loss %.4f, policy loss %.4f, Wasserstein "
            "estimate %.4f; %d images in %.1f s (%.1f images/s)",
            record["epoch"],
            record["task_loss"],
            record["critic_loss"],
            record["policy_loss"],
            record["wasserstein"],
            self._epoch_images,
            seconds,
            record["images_per_s"],
        )
