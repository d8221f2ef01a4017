"""Lightning callbacks that every training run uses."""

from __future__ import annotations

import lightning as L
from lightning.fabric.utilities.seed import seed_everything

from fishaug.data.sampling import epoch_seed


class EpochSeed(L.Callback):
    """Reseed Python, NumPy and torch at the start of every training epoch.

    Augmentation draws and shuffling then depend only on the run's seed and the epoch, so a run
    resumed from an epoch's checkpoint continues exactly as an uninterrupted run would. This is
    tested with ``data.num_workers=0``. Worker processes draw their seeds from the reseeded
    generator too, but a library that seeds itself inside a worker is not covered.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seed_everything(epoch_seed(self.seed, trainer.current_epoch), workers=True, verbose=False)
