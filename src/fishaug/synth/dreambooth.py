"""DreamBooth: full fine-tuning of the UNet (and text encoder) with prior preservation.

DreamBooth (Ruiz et al., "Fine Tuning Text-to-Image Diffusion Models for Subject-Driven
Generation", CVPR 2023) fine-tunes every weight on captions that carry an identifier, and keeps
the class's prior by also training on images the base model made from the class prompt without
the identifier. Each class of the fine-tuning set gets its own class images, made once and
reused, in ``class_data_dir/<label>/``. The output is a full pipeline folder (and one per
checkpoint), about as large as the base model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from fishaug.errors import ConfigError, DataError
from fishaug.synth.finetune import (
    CaptionedImages,
    Components,
    FinetuneSettings,
    PriorPairs,
    finetune_captions,
    fit,
    load_components,
    make_accelerator,
    place,
    weight_dtype,
    write_model_sidecars,
    write_summary,
)
from fishaug.synth.generate import SamplerSettings, render
from fishaug.synth.prepare import read_finetune_set
from fishaug.synth.runtime import fresh_output_dir
from fishaug.synth.species import ClassPrompts, read_prompts

log = logging.getLogger(__name__)


@dataclass
class DreamBoothSettings(FinetuneSettings):
    """Fine-tuning settings plus prior preservation: ``num_class_images`` per class, made with
    ``class_sampler`` settings, weighted by ``prior_loss_weight``."""

    learning_rate: float = 5e-6
    text_encoder_learning_rate: float = 5e-6
    train_text_encoder: bool = True
    prior_preservation: bool = True
    prior_loss_weight: float = 1.0
    class_data_dir: str | None = None
    num_class_images: int = 100
    class_batch_size: int = 4
    class_num_inference_steps: int = 30
    class_guidance_scale: float = 7.5
    class_negative_prompt: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.prior_preservation:
            if self.class_data_dir is None:
                raise ConfigError(
                    f"{self.key}.prior_preservation=true needs {self.key}.class_data_dir, the "
                    "folder for the class images."
                )
            if self.num_class_images < 1 or self.class_batch_size < 1:
                raise ConfigError(
                    f"{self.key}.num_class_images={self.num_class_images} and "
                    f"{self.key}.class_batch_size={self.class_batch_size} must be >= 1."
                )
            if self.prior_loss_weight < 0:
                raise ConfigError(
                    f"{self.key}.prior_loss_weight={self.prior_loss_weight} is out of range; use >= 0."
                )


def make_class_images(
    components: Components,
    prompts: dict[str, ClassPrompts],
    settings: DreamBoothSettings,
    device: torch.device,
    autocast: Any,
) -> pd.DataFrame:
    """Make the missing class images with the base model; return ``path``, ``label``, ``prompt``.

    Image ``i`` of a class uses seed ``settings.seed + i``, so an interrupted run resumes with
    the same images.
    """
    folder = Path(settings.class_data_dir)
    sampler = SamplerSettings(
        num_inference_steps=settings.class_num_inference_steps,
        guidance_scale=settings.class_guidance_scale,
        resolution=settings.resolution,
        negative_prompt=settings.class_negative_prompt,
    )
    pipe = components.pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    rows = []
    generated = 0
    for label, entry in sorted(prompts.items()):
        paths = [folder / label / f"class_{i:04d}.png" for i in range(settings.num_class_images)]
        missing = [i for i, path in enumerate(paths) if not path.is_file()]
        for start in range(0, len(missing), settings.class_batch_size):
            batch = missing[start : start + settings.class_batch_size]
            with torch.no_grad(), autocast():
                images, _ = render(
                    pipe,
                    [entry.class_prompt] * len(batch),
                    [settings.seed + i for i in batch],
                    sampler,
                )
            for i, image in zip(batch, images, strict=True):
                paths[i].parent.mkdir(parents=True, exist_ok=True)
                image.save(paths[i])
            generated += len(batch)
        rows += [{"path": str(p), "label": label, "prompt": entry.class_prompt} for p in paths]
    log.info(
        "Class images: %d generated now, %d in %s (%d per class)",
        generated,
        len(rows),
        folder,
        settings.num_class_images,
    )
    return pd.DataFrame(rows)


def train_dreambooth(
    settings: DreamBoothSettings, base_model: str, local_files_only: bool = False
) -> dict[str, Any]:
    """Fine-tune the whole UNet (and text encoder) on the set at ``settings.data_dir``.

    Returns the run's summary.

    Raises:
        ConfigError: a setting is invalid, the output folder is taken, or the base model
            cannot be loaded.
        DataError: the fine-tuning set is missing or has no prompts file.
        FloatingPointError: the loss became NaN or infinite.
    """
    metadata = read_finetune_set(settings.data_dir)
    prompts = read_prompts(settings.data_dir)
    if prompts is None:
        raise DataError(
            f"'{settings.data_dir}' has no prompts.json, so the class prompts for prior "
            "preservation are unknown. Make the set with `synth.py step=prepare`."
        )
    accelerator = make_accelerator(settings)
    output = fresh_output_dir(settings.output_dir, settings.overwrite, f"{settings.key}.output_dir")
    components = load_components(
        base_model, settings.prediction_type, local_files_only, settings.key
    )

    dtype = weight_dtype(accelerator)
    paths, captions = finetune_captions(metadata)
    dataset: Any = CaptionedImages(
        paths, captions, components.tokenizer, settings.resolution, settings.random_flip
    )
    if settings.prior_preservation:
        labels = sorted(set(metadata["label"]))
        classes = make_class_images(
            components,
            {label: prompts[label] for label in labels},
            settings,
            accelerator.device,
            accelerator.autocast,
        )
        priors = CaptionedImages(
            classes["path"].tolist(),
            classes["prompt"].tolist(),
            components.tokenizer,
            settings.resolution,
            settings.random_flip,
            prior=True,
        )
        dataset = PriorPairs(dataset, priors)

    unet, text_encoder = components.unet, components.text_encoder
    # The trained modules keep float32 master weights under mixed precision (autocast does the
    # half-precision math); frozen ones are stored in half precision to save memory.
    place(components.vae, accelerator.device, dtype)
    unet.requires_grad_(True)
    param_groups = [{"params": list(unet.parameters()), "lr": settings.learning_rate}]
    if settings.train_text_encoder:
        text_encoder.requires_grad_(True)
        param_groups.append(
            {"params": list(text_encoder.parameters()), "lr": settings.text_encoder_learning_rate}
        )
        unet, text_encoder = accelerator.prepare(unet, text_encoder)
    else:
        place(text_encoder, accelerator.device, dtype)
        unet = accelerator.prepare(unet)
    if settings.gradient_checkpointing:
        accelerator.unwrap_model(unet).enable_gradient_checkpointing()
        if settings.train_text_encoder:
            accelerator.unwrap_model(text_encoder).gradient_checkpointing_enable()

    def save(folder: Path, step: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        pipe = components.pipe
        pipe.unet = accelerator.unwrap_model(unet)
        pipe.text_encoder = accelerator.unwrap_model(text_encoder)
        pipe.save_pretrained(folder)
        write_model_sidecars(folder, settings, base_model, step)

    weight = settings.prior_loss_weight if settings.prior_preservation else 0.0
    summary = fit(
        settings, components, accelerator, unet, text_encoder, param_groups, dataset, save, weight
    )
    write_summary(output, settings, "dreambooth", {**summary, "base_model": base_model})
    return summary


def run_dreambooth(cfg: DictConfig) -> dict[str, Any]:
    """Fine-tune ``cfg.base.model`` with the ``cfg.dreambooth`` settings (the ``dreambooth`` step)."""
    settings = DreamBoothSettings.from_config(
        OmegaConf.to_container(cfg.dreambooth, resolve=True), "dreambooth"
    )
    return train_dreambooth(settings, cfg.base.model, cfg.base.local_files_only)
