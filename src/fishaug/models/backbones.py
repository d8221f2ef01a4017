"""torchvision ResNets with a classifier sized to the class count."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from fishaug.errors import ConfigError

log = logging.getLogger(__name__)

BACKBONES = {"resnet18": models.resnet18, "resnet50": models.resnet50}


def build_backbone(arch: str, num_classes: int, weights_path: str | None = None) -> nn.Module:
    """Build a ResNet from scratch, or from a local weights file, with a ``num_classes`` head.

    ``weights_path`` is a ``state_dict`` saved with ``torch.save`` (for example torchvision's
    ImageNet weights downloaded beforehand). Its final ``fc`` layer is dropped whenever its shape
    differs from the new head, so ImageNet weights load into a 7-class model.

    Raises:
        ConfigError: ``arch`` is unknown or ``weights_path`` does not exist or does not fit.
    """
    if arch not in BACKBONES:
        raise ConfigError(f"model.arch={arch!r} is not valid; use one of {sorted(BACKBONES)}.")
    if num_classes < 2:
        raise ConfigError(f"The dataset has {num_classes} class(es); classification needs 2.")
    net = BACKBONES[arch](weights=None, num_classes=num_classes)
    if weights_path is None:
        return net

    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"model.weights_path='{weights_path}' does not exist. Download the weights to a "
            "local file first, or set model.weights_path=null to train from scratch."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    head_shape = net.fc.weight.shape
    if state.get("fc.weight") is not None and state["fc.weight"].shape != head_shape:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    backbone_missing = [k for k in missing if not k.startswith("fc.")]
    if backbone_missing or unexpected:
        raise ConfigError(
            f"model.weights_path='{weights_path}' does not fit {arch}: missing "
            f"{backbone_missing[:5]}, unexpected {list(unexpected)[:5]}."
        )
    log.info("Loaded %s weights from %s (head re-initialised: %s)", arch, path, bool(missing))
    return net
