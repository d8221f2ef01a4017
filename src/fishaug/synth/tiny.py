"""Tiny, randomly initialised models with the real architectures, for tests and the CPU demo.

The tiny Stable Diffusion has a 2-level UNet and VAE (latents at half the image size), a 2-layer
CLIP text encoder and a byte-level CLIP tokenizer without merges, so every character is a token.
Its images are noise, but every step of the pipeline runs on it exactly as on real weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    StableDiffusionPipeline,
    StableDiffusionUpscalePipeline,
    UNet2DConditionModel,
)
from omegaconf import DictConfig
from tokenizers import pre_tokenizers
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
)

from fishaug.errors import ConfigError
from fishaug.synth.runtime import quiet_progress_bars

log = logging.getLogger(__name__)

WIDTH = 32
MAX_TOKENS = 77


def tiny_tokenizer() -> CLIPTokenizer:
    """Build a CLIP tokenizer whose vocabulary is the 256 byte symbols, with and without ``</w>``."""
    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for symbol in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(symbol, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=MAX_TOKENS)


def tiny_text_encoder(vocab_size: int) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=WIDTH,
        intermediate_size=2 * WIDTH,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=MAX_TOKENS,
        projection_dim=WIDTH,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return CLIPTextModel(config)


def tiny_unet(sample_size: int, in_channels: int = 4, **kwargs) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(16, WIDTH),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=WIDTH,
        norm_num_groups=8,
        attention_head_dim=8,
        **kwargs,
    )


def tiny_vae(levels: int = 2, scaling_factor: float = 0.18215) -> AutoencoderKL:
    """Build a VAE with ``levels`` resolution levels; latents are ``2 ** (levels - 1)`` times smaller."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8,) + (16,) * (levels - 1),
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        latent_channels=4,
        norm_num_groups=8,
        scaling_factor=scaling_factor,
    )


def build_tiny_pipeline(
    folder: str | Path, resolution: int = 32, prediction_type: str = "epsilon", seed: int = 0
) -> Path:
    """Save a tiny Stable Diffusion pipeline into ``folder``; return the folder.

    Args:
        resolution: image size in pixels the UNet is configured for (a multiple of 4).
        prediction_type: ``epsilon`` (as SD 1.5) or ``v_prediction`` (as SD 2.1-768).

    Raises:
        ConfigError: ``resolution`` or ``prediction_type`` is invalid.
    """
    if resolution < 8 or resolution % 4 != 0:
        raise ConfigError(
            f"tiny_model.resolution={resolution} is not valid; use a multiple of 4, >= 8."
        )
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ConfigError(
            f"tiny_model.prediction_type={prediction_type!r} is not valid; use epsilon or v_prediction."
        )
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )
    pipe = StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=tiny_text_encoder(len(tokenizer)),
        tokenizer=tokenizer,
        unet=tiny_unet(resolution // 2),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    folder = Path(folder)
    pipe.save_pretrained(folder)
    log.info("Saved a tiny Stable Diffusion (%d px, %s) to %s", resolution, prediction_type, folder)
    return folder


def build_tiny_upscaler(folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny x4 upscaler pipeline (the layout of stable-diffusion-x4-upscaler) into ``folder``.

    The UNet takes 7 input channels (4 latent, 3 low-resolution image), and the VAE has 3 levels, so
    decoding latents of the low-resolution size gives an image 4 times larger.
    """
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    pipe = StableDiffusionUpscalePipeline(
        vae=tiny_vae(levels=3, scaling_factor=0.08333),
        text_encoder=tiny_text_encoder(len(tokenizer)),
        tokenizer=tokenizer,
        unet=tiny_unet(16, in_channels=7, num_class_embeds=1000),
        low_res_scheduler=DDPMScheduler(),
        scheduler=DDIMScheduler(prediction_type="v_prediction", steps_offset=1),
        max_noise_level=350,
    )
    folder = Path(folder)
    pipe.save_pretrained(folder)
    log.info("Saved a tiny x4 upscaler to %s", folder)
    return folder


def build_tiny_captioner(folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny BLIP captioning model and its processor into ``folder``."""
    torch.manual_seed(seed)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "fish", "in", "dark", "water"]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(words)}, model_max_length=32)
    tokenizer.bos_token = "[CLS]"
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
    )

    config = BlipConfig(
        text_config={
            "vocab_size": len(words),
            "hidden_size": WIDTH,
            "intermediate_size": 2 * WIDTH,
            "num_attention_heads": 4,
            "num_hidden_layers": 1,
            "max_position_embeddings": 40,
            "bos_token_id": 2,
            "sep_token_id": 3,
            "pad_token_id": 0,
        },
        vision_config={
            "hidden_size": WIDTH,
            "intermediate_size": 2 * WIDTH,
            "num_attention_heads": 4,
            "num_hidden_layers": 1,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=WIDTH,
    )

    folder = Path(folder)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    log.info("Saved a tiny BLIP captioning model to %s", folder)
    return folder


def run_tiny_model(cfg: DictConfig) -> Path:
    """Write the tiny pipeline, upscaler and captioner (the ``tiny_model`` step)."""
    settings = cfg.tiny_model
    quiet_progress_bars()
    folder = build_tiny_pipeline(
        settings.output_dir, settings.resolution, settings.prediction_type, settings.seed
    )
    if settings.upscaler_dir is not None:
        build_tiny_upscaler(settings.upscaler_dir, settings.seed)
    if settings.captioner_dir is not None:
        build_tiny_captioner(settings.captioner_dir, settings.seed)
    return folder
