"""The classification LightningModule shared by every augmentation and split scheme."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
import torchmetrics.functional.classification as tmf

from fishaug.models.backbones import build_backbone

log = logging.getLogger(__name__)

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


class FishClassifier(L.LightningModule):
    """A torchvision ResNet trained with cross-entropy.

    Validation and test batches are collected per epoch. At the end of each epoch the module logs
    ``<stage>/loss``, ``<stage>/acc`` and ``<stage>/f1_macro``. It keeps the epoch's outputs in
    ``collected[stage]`` as ``(probs (N, C), targets (N,), row indices (N,))``, from which the
    caller writes prediction files and full metrics.

    Args:
        arch: ``resnet18`` or ``resnet50``.
        class_names: the global class list; its order defines the output indices.
        weights_path: a local ``state_dict`` to start from; None trains from scratch.
        optimizer: a factory taking the parameters (a Hydra ``_partial_`` optimizer); only
            needed for training, so a checkpoint loads for evaluation without it.
        scheduler: a factory taking the optimizer, or None.
        label_smoothing: cross-entropy label smoothing in [0, 1).
    """

    def __init__(
        self,
        arch: str,
        class_names: Sequence[str],
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        weights_path: str | None = None,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.class_names = list(class_names)
        self.net = build_backbone(arch, len(self.class_names), weights_path)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.label_smoothing = label_smoothing
        self.collected: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._outputs: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return logits (B, C) for images (B, 3, H, W)."""
        return self.net(images)

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        images, targets, _ = batch
        logits = self(images)
        loss = F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        accuracy = (logits.argmax(dim=1) == targets).float().mean()
        self.log("train/acc", accuracy, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: tuple, batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_validation_epoch_start(self) -> None:
        self._outputs["val"] = []

    def on_test_epoch_start(self) -> None:
        self._outputs["test"] = []

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise RuntimeError(
                "FishClassifier was built without an optimizer; pass model.optimizer."
            )
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }

    def _eval_step(self, stage: str, batch: tuple) -> None:
        images, targets, rows = batch
        probs = self(images).float().softmax(dim=1)
        self._outputs[stage].append((probs.detach(), targets.detach(), rows.detach()))

    def _eval_epoch_end(self, stage: str) -> None:
        outputs = self._outputs.pop(stage, [])
        if not outputs:
            return
        probs = torch.cat([o[0] for o in outputs])
        targets = torch.cat([o[1] for o in outputs])
        rows = torch.cat([o[2] for o in outputs])
        if self.trainer.world_size > 1:
            # NOTE: DistributedSampler pads the last batch with repeated samples; duplicates are
            # dropped by row index so each image counts once.
            probs, targets, rows = (
                self.all_gather(t).flatten(0, 1) for t in (probs, targets, rows)
            )
            rows, first = _unique_first(rows)
            probs, targets = probs[first], targets[first]

        num_classes = len(self.class_names)
        loss = F.nll_loss(probs.clamp_min(1e-12).log(), targets)
        preds = probs.argmax(dim=1)
        self.log(f"{stage}/loss", loss, sync_dist=False)
        self.log(
            f"{stage}/acc", tmf.multiclass_accuracy(preds, targets, num_classes, average="micro")
        )
        self.log(
            f"{stage}/f1_macro",
            tmf.multiclass_f1_score(preds, targets, num_classes, average="macro"),
            prog_bar=True,
        )
        self.collected[stage] = (probs.cpu(), targets.cpu(), rows.cpu())


def _unique_first(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the unique values and the index of each one's first occurrence."""
    unique, inverse = torch.unique(values, return_inverse=True)
    positions = torch.arange(len(values), device=values.device)
    first = torch.full_like(unique, len(values)).scatter_reduce(0, inverse, positions, "amin")
    return unique, first
