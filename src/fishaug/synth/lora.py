"""LoRA fine-tuning of Stable Diffusion on a fine-tuning set (peft adapters on the UNet's
attention projections, and optionally on the text encoder's).

LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022) freezes the
weights W and learns a low-rank update ``W + (alpha / rank) * B A``; B starts at zero, so
training starts from the base model. The output folder contains ``pytorch_lora_weights.safetensors``
in the layout that ``StableDiffusionPipeline.load_lora_weights`` reads, plus ``prompts.json``,
``provenance.json``, ``finetune.json`` and a ``checkpoint-<step>/`` folder per saved checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import StableDiffusionPipeline
from diffusers.training_utils import cast_training_params
from diffusers.utils import convert_state_dict_to_diffusers
from omegaconf import DictConfig, OmegaConf
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from fishaug.errors import ConfigError
from fishaug.synth.finetune import (
    CaptionedImages,
    FinetuneSettings,
    finetune_captions,
    fit,
    load_components,
    make_accelerator,
    place,
    weight_dtype,
    write_model_sidecars,
    write_summary,
)
from fishaug.synth.prepare import read_finetune_set
from fishaug.synth.runtime import fresh_output_dir

log = logging.getLogger(__name__)

UNET_TARGETS = ("to_k", "to_q", "to_v", "to_out.0")
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


@dataclass
class LoraSettings(FinetuneSettings):
    """Fine-tuning settings plus the LoRA rank, alpha (null: equal to the rank) and targets."""

    rank: int = 4
    alpha: float | None = None
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(UNET_TARGETS))
    text_encoder_target_modules: list[str] = field(
        default_factory=lambda: list(TEXT_ENCODER_TARGETS)
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ConfigError(
                f"{self.key}.rank={self.rank!r} is out of range; use a whole number >= 1."
            )
        if self.alpha is not None and not self.alpha > 0:
            raise ConfigError(
                f"{self.key}.alpha={self.alpha} is out of range; use a number > 0 or null."
            )
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"{self.key}.dropout={self.dropout} is out of range; use 0 <= p < 1.")
        if not self.target_modules:
            raise ConfigError(f"{self.key}.target_modules is empty; name the layers to adapt.")

    def lora_config(self, text_encoder: bool = False) -> LoraConfig:
        targets = self.text_encoder_target_modules if text_encoder else self.target_modules
        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha if self.alpha is not None else self.rank,
            lora_dropout=self.dropout,
            init_lora_weights="gaussian",
            target_modules=list(targets),
        )


def train_lora(
    settings: LoraSettings, base_model: str, local_files_only: bool = False
) -> dict[str, Any]:
    """Fine-tune LoRA adapters on the set at ``settings.data_dir``; return the run's summary.

    Raises:
        ConfigError: a setting is invalid, the output folder is taken, or the base model
            cannot be loaded.
        DataError: the fine-tuning set is missing or incomplete.
        FloatingPointError: the loss became NaN or infinite.
    """
    metadata = read_finetune_set(settings.data_dir)
    accelerator = make_accelerator(settings)
    output = fresh_output_dir(settings.output_dir, settings.overwrite, f"{settings.key}.output_dir")
    components = load_components(
        base_model, settings.prediction_type, local_files_only, settings.key
    )
    dtype = weight_dtype(accelerator)
    unet, text_encoder = components.unet, components.text_encoder
    # Frozen weights in half precision save memory; the adapters stay float32 (cast below),
    # because Adam updates of fp16 weights underflow.
    for module in (unet, components.vae, text_encoder):
        place(module, accelerator.device, dtype)

    unet_config = settings.lora_config()
    unet.add_adapter(unet_config)
    text_config = None
    if settings.train_text_encoder:
        text_config = settings.lora_config(text_encoder=True)
        text_encoder.add_adapter(text_config)
    trained = [unet, text_encoder] if settings.train_text_encoder else [unet]
    cast_training_params(trained, dtype=torch.float32)
    if settings.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if settings.train_text_encoder:
            text_encoder.gradient_checkpointing_enable()

    param_groups = [
        {"params": [p for p in unet.parameters() if p.requires_grad], "lr": settings.learning_rate}
    ]
    if settings.train_text_encoder:
        param_groups.append(
            {
                "params": [p for p in text_encoder.parameters() if p.requires_grad],
                "lr": settings.text_encoder_learning_rate,
            }
        )
        unet, text_encoder = accelerator.prepare(unet, text_encoder)
    else:
        unet = accelerator.prepare(unet)

    paths, captions = finetune_captions(metadata)
    dataset = CaptionedImages(
        paths, captions, components.tokenizer, settings.resolution, settings.random_flip
    )

    def save(folder: Path, step: int) -> None:
        save_lora(
            folder,
            accelerator.unwrap_model(unet),
            accelerator.unwrap_model(text_encoder) if settings.train_text_encoder else None,
            unet_config,
            text_config,
        )
        write_model_sidecars(folder, settings, base_model, step)

    summary = fit(
        settings, components, accelerator, unet, text_encoder, param_groups, dataset, save
    )
    write_summary(output, settings, "lora", {**summary, "base_model": base_model})
    return summary


def save_lora(
    folder: Path,
    unet: torch.nn.Module,
    text_encoder: torch.nn.Module | None,
    unet_config: LoraConfig,
    text_config: LoraConfig | None,
) -> Path:
    """Save the adapters of ``unet`` (and ``text_encoder``) as diffusers LoRA weights.

    The LoRA configs go into the file's metadata, so loading restores alpha as trained even
    when it differs from the rank.
    """
    folder.mkdir(parents=True, exist_ok=True)
    unet_layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    text_layers = None
    if text_encoder is not None:
        text_layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(text_encoder))
    StableDiffusionPipeline.save_lora_weights(
        folder,
        unet_lora_layers=unet_layers,
        text_encoder_lora_layers=text_layers,
        unet_lora_adapter_metadata=unet_config.to_dict(),
        text_encoder_lora_adapter_metadata=text_config.to_dict() if text_config else None,
    )
    return folder


def run_lora(cfg: DictConfig) -> dict[str, Any]:
    """Fine-tune LoRA adapters on ``cfg.base.model`` with the ``cfg.lora`` settings (the ``lora`` step)."""
    settings = LoraSettings.from_config(OmegaConf.to_container(cfg.lora, resolve=True), "lora")
    return train_lora(settings, cfg.base.model, cfg.base.local_files_only)
