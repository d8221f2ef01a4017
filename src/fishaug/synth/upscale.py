"""Upscaling small fish crops to the fine-tuning resolution with a diffusion upscaler."""

from __future__ import annotations

import logging

import torch
from diffusers import StableDiffusionUpscalePipeline
from PIL import Image

from fishaug.errors import ConfigError
from fishaug.synth.models import apply_memory_options, load_pipeline

log = logging.getLogger(__name__)

FACTOR = 4


class DiffusionUpscaler:
    """Upscale an image 4 times with a text-conditioned upscaler (stable-diffusion-x4-upscaler).

    Args:
        model: a local pipeline folder, or a Hub id already in the cache.
        noise_level: noise added to the low-resolution image, 0 to the model's max_noise_level;
            higher values let the model invent more detail.
        guidance_scale: values above 1 use classifier-free guidance with the caption.
        seed: seed of the noise, so a rerun gives the same images.
    """

    def __init__(
        self,
        model: str,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        num_inference_steps: int = 20,
        noise_level: int = 20,
        guidance_scale: float = 0.0,
        seed: int = 0,
        key: str = "prepare.upscaler.model",
        local_files_only: bool = False,
    ):
        if num_inference_steps < 1:
            raise ConfigError(
                f"prepare.upscaler.num_inference_steps={num_inference_steps} is out of range; "
                "use 1 or more."
            )
        pipe = load_pipeline(
            model,
            key,
            dtype=dtype,
            local_files_only=local_files_only,
            pipeline_class=StableDiffusionUpscalePipeline,
        )
        if not 0 <= noise_level <= pipe.config.max_noise_level:
            raise ConfigError(
                f"prepare.upscaler.noise_level={noise_level} is out of range; use 0 to "
                f"{pipe.config.max_noise_level}."
            )
        self.pipe = apply_memory_options(pipe, {}, device, "prepare.upscaler")
        self.num_inference_steps = num_inference_steps
        self.noise_level = noise_level
        self.guidance_scale = guidance_scale
        self.seed = seed

    def __call__(self, image: Image.Image, prompt: str, size: int) -> Image.Image:
        """Return ``image`` upscaled to ``size`` x ``size``: Lanczos to size / 4, then the model."""
        low = max(size // FACTOR, 1)
        small = image.resize((low, low), Image.Resampling.LANCZOS)
        generator = torch.Generator().manual_seed(self.seed)
        upscaled = self.pipe(
            prompt=prompt,
            image=small,
            num_inference_steps=self.num_inference_steps,
            noise_level=self.noise_level,
            guidance_scale=self.guidance_scale,
            generator=generator,
        ).images[0]
        if upscaled.size != (size, size):
            upscaled = upscaled.resize((size, size), Image.Resampling.LANCZOS)
        return upscaled
