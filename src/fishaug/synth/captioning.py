"""Automatic captions from a local image-to-text model (BLIP-style: an image in, a caption out)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from fishaug.errors import ConfigError

log = logging.getLogger(__name__)


class ImageCaptioner:
    """Caption images with a captioning model such as Salesforce/blip-image-captioning-base.

    Args:
        model: a local folder with the model and its processor, or a Hub id already in the cache.
        device: where the model runs.
        max_new_tokens: length limit of a caption, in tokens.
        prompt: text the caption should continue (BLIP's conditional captioning), or None.
        batch_size: images per forward pass.
        key: the config key that named ``model``, for error messages.

    Raises:
        ConfigError: the model cannot be loaded from the folder or the cache.
    """

    def __init__(
        self,
        model: str,
        device: torch.device,
        max_new_tokens: int = 30,
        prompt: str | None = None,
        batch_size: int = 8,
        key: str = "prepare.auto_caption.model",
        local_files_only: bool = True,
    ):
        if max_new_tokens < 1 or batch_size < 1:
            raise ConfigError(
                f"{key}: max_new_tokens={max_new_tokens} and batch_size={batch_size} must be >= 1."
            )
        try:
            self.processor = AutoProcessor.from_pretrained(model, local_files_only=local_files_only)
            self.model = AutoModelForImageTextToText.from_pretrained(
                model, local_files_only=local_files_only
            ).to(device)
        except (OSError, ValueError) as error:
            where = "folder" if Path(model).expanduser().exists() else "Hub id (not in the cache)"
            raise ConfigError(
                f"{key}='{model}' could not be loaded as a captioning model from this {where}: "
                f"{error}. Download it first, for example `hf download "
                f"Salesforce/blip-image-captioning-base --local-dir <folder>`, and pass the folder."
            ) from error
        self.model.eval()
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.prompt = prompt
        self.batch_size = batch_size

    @torch.inference_mode()
    def __call__(self, images: Sequence[Image.Image]) -> list[str]:
        """Return one caption per RGB image, stripped of white space."""
        captions: list[str] = []
        for start in range(0, len(images), self.batch_size):
            batch = list(images[start : start + self.batch_size])
            kwargs = {"text": [self.prompt] * len(batch)} if self.prompt else {}
            inputs = self.processor(images=batch, return_tensors="pt", **kwargs).to(self.device)
            tokens = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens)
            decoded = self.processor.batch_decode(tokens, skip_special_tokens=True)
            captions.extend(text.strip() for text in decoded)
        return captions
