"""Per-sample weights against class imbalance."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def inverse_frequency_weights(labels: Sequence[int]) -> torch.Tensor:
    """Weight each sample by 1 / (count of its class), so every class is drawn equally often.

    Returns a float64 tensor of shape (len(labels),) for ``torch.utils.data.WeightedRandomSampler``.
    """
    labels = np.asarray(labels)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return torch.as_tensor(1.0 / counts[inverse], dtype=torch.float64)
