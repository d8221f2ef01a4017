"""Augmentation policies stored as Albumentations pipeline files, such as Faster AutoAugment's.

``aug=faster_aa aug.policy=<file>`` trains with a policy that ``python search.py`` wrote, or
with any pipeline saved by ``albumentations.save`` (AutoAlbument 0.4 files are converted, see
:mod:`fishaug.augment.faster_aa.policy_file`). The pipeline runs on uint8 RGB images after the
letterbox and must keep their size.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import albumentations as A
import numpy as np
from PIL import Image
from torch.utils.data import get_worker_info

from fishaug.augment.faster_aa.policy_file import load_policy
from fishaug.augment.registry import register
from fishaug.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class AlbumentationsPolicy:
    """Apply an Albumentations pipeline to PIL images: a PIL-to-PIL training transform.

    Albumentations keeps its own random state, which the global seeds do not reach. Each
    process (the main one, or each DataLoader worker) therefore seeds the pipeline on its first
    image from ``seed`` and its worker id, so that runs repeat and workers do not repeat each
    other's draws.

    Args:
        transform: the pipeline; it must keep the image size.
        seed: the run's seed.
        source: where the pipeline came from, for messages.
    """

    def __init__(self, transform: A.Compose, seed: int = 0, source: str = "policy"):
        self.transform = transform
        self.seed = int(seed)
        self.source = source
        self._seeded_process: int | None = None
        self._warned_mode = False

    def __call__(self, image: Image.Image) -> Image.Image:
        self._seed_process()
        if image.mode != "RGB":
            if not self._warned_mode:
                log.warning(
                    "The policy %s got a %s image; converting it to RGB (the policy was made "
                    "for RGB images). This is shown once.",
                    self.source,
                    image.mode,
                )
                self._warned_mode = True
            image = image.convert("RGB")
        pixels = np.asarray(image)
        augmented = self.transform(image=pixels)["image"]
        if augmented.shape != pixels.shape:
            raise DataError(
                f"The policy {self.source} changed the image shape from {pixels.shape} to "
                f"{augmented.shape}. fishaug applies policies after the letterbox and needs the "
                "size kept; remove resizing or cropping steps from the policy file."
            )
        return Image.fromarray(augmented)

    def _seed_process(self) -> None:
        process = os.getpid()
        if self._seeded_process == process:
            return
        worker = get_worker_info()
        worker_id = 0 if worker is None else worker.id + 1
        state = np.random.SeedSequence([self.seed, worker_id]).generate_state(1)[0]
        self.transform.set_random_seed(int(state))
        self._seeded_process = process

    def __repr__(self) -> str:
        return f"AlbumentationsPolicy({self.source})"


@register("faster_aa")
def faster_aa(policy: str | None = None, seed: int = 0) -> AlbumentationsPolicy:
    """Build the training transform of a policy file from ``python search.py`` or AutoAlbument.

    Raises:
        ConfigError: ``policy`` is not set, does not exist, or is not a valid pipeline file.
    """
    if policy is None or str(policy) in ("", "???"):
        raise ConfigError(
            "aug.policy is not set; aug=faster_aa needs a policy file, for example "
            "aug.policy=logs/search/runs/<run>/policy.json written by python search.py."
        )
    path = Path(str(policy)).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"aug.policy='{policy}' does not exist. Run python search.py first and point "
            "aug.policy at the policy.json (or policies/epoch_<N>.json) in its run folder."
        )
    transform = load_policy(path)
    log.info("Faster AutoAugment policy from %s", path)
    return AlbumentationsPolicy(transform, seed=seed, source=str(path))
