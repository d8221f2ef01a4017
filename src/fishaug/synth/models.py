"""Loading Stable Diffusion pipelines and LoRA adapters, and their memory options.

A model is a diffusers pipeline folder (``model_index.json`` with ``unet/``, ``vae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``) or a Hugging Face Hub id such as
``stable-diffusion-v1-5/stable-diffusion-v1-5``. Hub ids are looked up in the local cache
first; ``local_files_only`` stops any download.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from safetensors import safe_open

from fishaug.errors import ConfigError
from fishaug.synth.runtime import quiet_progress_bars

log = logging.getLogger(__name__)

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def load_pipeline(
    model: str,
    key: str,
    dtype: torch.dtype = torch.float32,
    local_files_only: bool = False,
    safety_checker: bool = False,
    pipeline_class: type[DiffusionPipeline] = StableDiffusionPipeline,
) -> DiffusionPipeline:
    """Load a pipeline from a local folder or a Hub id.

    Args:
        model: the folder or Hub id.
        key: the config key that named ``model``, for error messages.
        safety_checker: keep the checkpoint's safety checker. Without it, nothing is blacked out;
            with it, flagged images come back black and the generate step rejects them.

    Raises:
        ConfigError: the folder is not a pipeline, or the weights are neither local nor in the
            cache and cannot be downloaded.
    """
    quiet_progress_bars()
    kwargs: dict[str, Any] = {"dtype": dtype}
    if pipeline_class is StableDiffusionPipeline and not safety_checker:
        kwargs.update(safety_checker=None, requires_safety_checker=False)

    folder = Path(model).expanduser()
    if folder.exists():
        if not (folder / "model_index.json").is_file():
            raise ConfigError(
                f"{key}='{model}' is not a diffusers pipeline folder (it has no "
                "model_index.json). Pass the folder of a saved pipeline, for example one made "
                "by `hf download <hub id> --local-dir <folder>`."
            )
        return pipeline_class.from_pretrained(str(folder), **kwargs)

    if not HUB_ID.match(model):
        raise ConfigError(
            f"{key}='{model}' does not exist, and it is not a Hub id (<owner>/<name>). "
            "Check the path."
        )
    try:
        return pipeline_class.from_pretrained(model, local_files_only=local_files_only, **kwargs)
    except OSError as error:
        raise ConfigError(
            f"The weights of {key}='{model}' are not on this machine and could not be "
            f"downloaded ({type(error).__name__}: {error}). On a machine with internet access "
            f"run `hf download {model} --local-dir <folder>`, copy the folder "
            f"here and set {key}=<folder>."
        ) from error


def lora_weights_file(path: str | Path, key: str) -> Path:
    """Return the LoRA weights file of a LoRA folder (or the file itself).

    Raises:
        ConfigError: the path does not exist, contains no ``.safetensors`` file, or the file
            contains no tensors. Generating with the base model instead would go unnoticed.
    """
    location = Path(path).expanduser()
    if location.is_dir():
        candidates = [location / LORA_WEIGHTS] if (location / LORA_WEIGHTS).is_file() else []
        candidates = candidates or sorted(location.glob("*.safetensors"))
        if not candidates:
            raise ConfigError(
                f"{key}='{path}' contains no LoRA weights ({LORA_WEIGHTS}). Pass the output folder "
                "of `synth.py step=lora` or one of its checkpoint-<step> folders."
            )
        location = candidates[0]
    elif not location.is_file():
        raise ConfigError(
            f"{key}='{path}' does not exist. Pass the output folder of `synth.py step=lora` "
            "or one of its checkpoint-<step> folders."
        )
    with safe_open(str(location), framework="pt") as weights:
        if not list(weights.keys()):
            raise ConfigError(f"{key}='{path}': the LoRA file '{location}' contains no tensors.")
    return location


def load_lora(
    pipe: DiffusionPipeline, path: str | Path, scale: float, key: str, adapter_name: str = "fish"
) -> None:
    """Load a LoRA into ``pipe`` and apply it at ``scale`` (0 is the base model, 1 the LoRA as trained).

    Raises:
        ConfigError: no LoRA weights at ``path`` (see :func:`lora_weights_file`), or the
            weights do not fit the model.
    """
    weights = lora_weights_file(path, key)
    try:
        pipe.load_lora_weights(
            str(weights.parent), weight_name=weights.name, adapter_name=adapter_name
        )
    except (ValueError, RuntimeError, KeyError) as error:
        raise ConfigError(f"{key}='{path}' does not fit the model: {error}") from error
    if adapter_name not in pipe.get_active_adapters():
        raise ConfigError(f"{key}='{path}' loaded no adapter into the model.")
    pipe.set_adapters([adapter_name], adapter_weights=[float(scale)])


def apply_memory_options(
    pipe: DiffusionPipeline, options: Mapping[str, Any], device: torch.device, key: str
) -> DiffusionPipeline:
    """Apply memory options and move the pipeline to ``device``.

    ``options``: ``sdpa`` uses PyTorch 2's scaled dot-product attention (false: the plain
    attention). ``attention_slicing`` is false, ``auto``, ``max`` or a slice size.
    ``vae_slicing`` decodes a batch image by image and ``vae_tiling`` an image tile by tile.
    ``cpu_offload`` keeps idle sub-models in CPU memory and needs a GPU.

    Raises:
        ConfigError: an unknown option, or ``cpu_offload`` without a GPU.
    """
    known = {"sdpa", "attention_slicing", "vae_slicing", "vae_tiling", "cpu_offload"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"{key} has unknown option(s) {unknown}; use {sorted(known)}.")

    processor = AttnProcessor2_0 if options.get("sdpa", True) else AttnProcessor
    pipe.unet.set_attn_processor(processor())
    pipe.vae.set_attn_processor(processor())
    slicing = options.get("attention_slicing", False)
    if slicing not in (False, None):
        pipe.enable_attention_slicing("auto" if slicing is True else slicing)
    if options.get("vae_slicing", False):
        pipe.vae.enable_slicing()
    if options.get("vae_tiling", False):
        pipe.vae.enable_tiling()

    if options.get("cpu_offload", False):
        if device.type != "cuda":
            raise ConfigError(f"{key}.cpu_offload=true needs a CUDA GPU; set it to false.")
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def set_prediction_type(scheduler: Any, prediction_type: str | None, key: str) -> str:
    """Override the scheduler's prediction type when one is given; return the one in force.

    SD 1.x predicts the noise (``epsilon``). SD 2.x at 768 pixels predicts the velocity
    (``v_prediction``), and its scheduler config sets that.

    Raises:
        ConfigError: the value is not ``epsilon``, ``v_prediction`` or null.
    """
    if prediction_type is not None:
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ConfigError(
                f"{key}={prediction_type!r} is not valid; use epsilon, v_prediction or null "
                "(take it from the model's scheduler config)."
            )
        scheduler.register_to_config(prediction_type=prediction_type)
    return scheduler.config.prediction_type
