"""Per-sample weights against class imbalance."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler


def inverse_frequency_weights(labels: Sequence[int]) -> torch.Tensor:
    """Weight each sample by 1 / (count of its class), so every class is drawn equally often.

    Returns a float64 tensor of shape (len(labels),) for ``torch.utils.data.WeightedRandomSampler``.
    """
    labels = np.asarray(labels)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return torch.as_tensor(1.0 / counts[inverse], dtype=torch.float64)


class EpochSeededWeightedSampler(WeightedRandomSampler):
    """A ``WeightedRandomSampler`` whose draws depend only on ``seed`` and the epoch.

    Lightning calls ``set_epoch`` before every training epoch, so a run resumed from a checkpoint
    at epoch k draws the same batches from epoch k on as an uninterrupted run.
    """

    def __init__(self, weights: torch.Tensor, num_samples: int, seed: int = 0):
        super().__init__(weights, num_samples, replacement=True, generator=torch.Generator())
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(epoch_seed(self.seed, epoch))


def epoch_seed(seed: int, epoch: int) -> int:
    """Derive an independent 32-bit seed for one epoch of a run."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
