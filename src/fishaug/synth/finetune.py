"""Parts shared by LoRA and DreamBooth fine-tuning: settings, data, the denoising loss, the loop.

The loss is the latent diffusion objective that Stable Diffusion was trained with (Rombach et
al., "High-Resolution Image Synthesis with Latent Diffusion Models", CVPR 2022). An image is
encoded into VAE latents and noised at a random timestep. The UNet's output is then regressed
on the added noise (``epsilon``) or on the velocity (``v_prediction``, SD 2.x at 768 pixels).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from diffusers import DDPMScheduler, StableDiffusionPipeline
from diffusers.optimization import get_scheduler
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from fishaug.data.transforms import load_rgb
from fishaug.errors import ConfigError
from fishaug.synth.models import load_pipeline, set_prediction_type
from fishaug.synth.provenance import write_provenance
from fishaug.synth.runtime import check_mixed_precision, resolve_device
from fishaug.synth.species import PROMPTS_FILE

log = logging.getLogger(__name__)

LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")
SUMMARY_FILE = "finetune.json"


@dataclass
class FinetuneSettings:
    """Settings every fine-tuning method shares; ``key`` prefixes the config keys in messages.

    Steps count optimizer updates, and one update uses
    ``batch_size * gradient_accumulation_steps`` images. ``checkpoint_every`` saves ``checkpoint-<step>/`` folders that the grid and
    generate steps can use like the final output.
    """

    data_dir: str
    output_dir: str
    resolution: int = 512
    max_steps: int = 1000
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    text_encoder_learning_rate: float = 5e-5
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    train_text_encoder: bool = False
    checkpoint_every: int | None = None
    random_flip: bool = True
    prediction_type: str | None = None
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    log_every: int = 10
    overwrite: bool = False
    key: str = field(default="finetune", repr=False)

    def __post_init__(self) -> None:
        positive = {
            "resolution": self.resolution,
            "max_steps": self.max_steps,
            "batch_size": self.batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "log_every": self.log_every,
        }
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"{self.key}.{name}={value!r} is out of range; use a whole number >= 1."
                )
        if self.resolution % 8 != 0:
            raise ConfigError(
                f"{self.key}.resolution={self.resolution} is not valid; use a multiple of 8."
            )
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ConfigError(
                f"{self.key}.checkpoint_every={self.checkpoint_every} is out of range; use >= 1 or null."
            )
        for name in ("learning_rate", "text_encoder_learning_rate"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{self.key}.{name}={value} is out of range; use a number > 0.")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ConfigError(
                f"{self.key}.lr_scheduler={self.lr_scheduler!r} is not valid; use one of "
                f"{list(LR_SCHEDULERS)}."
            )
        if self.lr_warmup_steps < 0 or self.num_workers < 0:
            raise ConfigError(
                f"{self.key}.lr_warmup_steps and {self.key}.num_workers must be >= 0 "
                f"(got {self.lr_warmup_steps} and {self.num_workers})."
            )

    @classmethod
    def from_config(cls, config: Mapping[str, Any], key: str, **extra: Any):
        """Build settings from a config section, rejecting keys the method does not have."""
        known = {f.name for f in fields(cls)} - {"key"}
        values = {**dict(config), **extra}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{key} has unknown key(s) {unknown}; its keys are {sorted(known)}.")
        return cls(**values, key=key)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values.pop("key")
        return values


class CaptionedImages(Dataset):
    """Images with captions; an item is ``{"pixel_values": (3, R, R) in [-1, 1], "input_ids": (L,)}``.

    ``prior`` marks the images of DreamBooth's prior-preservation set.
    """

    def __init__(
        self,
        paths: Sequence[str],
        captions: Sequence[str],
        tokenizer: Any,
        resolution: int,
        random_flip: bool,
        prior: bool = False,
    ):
        if len(paths) != len(captions):
            raise ValueError("paths and captions differ in length.")
        self.paths = list(paths)
        self.input_ids = tokenizer(
            list(captions),
            max_length=tokenizer.model_max_length,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        ).input_ids
        steps: list[Any] = [
            v2.Resize(resolution, interpolation=v2.InterpolationMode.LANCZOS),
            v2.CenterCrop(resolution),
        ]
        if random_flip:
            # Fish swim both ways through a fish pass, so a mirrored fish is still a real view.
            steps.append(v2.RandomHorizontalFlip())
        steps += [
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.5], [0.5]),
        ]
        self.transform = v2.Compose(steps)
        self.prior = prior

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "pixel_values": self.transform(load_rgb(self.paths[i])),
            "input_ids": self.input_ids[i],
            "prior": self.prior,
        }


class PriorPairs(Dataset):
    """Pairs each fine-tuning image with a prior-preservation image, cycling the shorter set."""

    def __init__(self, instances: CaptionedImages, priors: CaptionedImages):
        self.instances = instances
        self.priors = priors

    def __len__(self) -> int:
        return max(len(self.instances), len(self.priors))

    def __getitem__(self, i: int) -> list[dict[str, Any]]:
        return [self.instances[i % len(self.instances)], self.priors[i % len(self.priors)]]


def collate(items: list[dict[str, Any] | list[dict[str, Any]]]) -> dict[str, torch.Tensor]:
    """Stack items into a batch; paired items put all fine-tuning images before the prior ones."""
    flat = [item for item in items if isinstance(item, dict)]
    if len(flat) != len(items):
        flat = [pair[0] for pair in items] + [pair[1] for pair in items]
    return {
        "pixel_values": torch.stack([item["pixel_values"] for item in flat]),
        "input_ids": torch.stack([item["input_ids"] for item in flat]),
        "prior": torch.tensor([item["prior"] for item in flat]),
    }


@dataclass
class Components:
    """The parts of a Stable Diffusion pipeline that fine-tuning uses."""

    pipe: StableDiffusionPipeline
    noise_scheduler: DDPMScheduler
    prediction_type: str

    @property
    def unet(self) -> torch.nn.Module:
        return self.pipe.unet

    @property
    def vae(self) -> torch.nn.Module:
        return self.pipe.vae

    @property
    def text_encoder(self) -> torch.nn.Module:
        return self.pipe.text_encoder

    @property
    def tokenizer(self) -> Any:
        return self.pipe.tokenizer


def load_components(
    model: str, prediction_type: str | None, local_files_only: bool, key: str
) -> Components:
    """Load the base pipeline in float32 and a DDPM noise scheduler with its noise schedule.

    Raises:
        ConfigError: the model cannot be loaded (see :func:`load_pipeline`).
    """
    pipe = load_pipeline(model, "base.model", local_files_only=local_files_only)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    resolved = set_prediction_type(noise_scheduler, prediction_type, f"{key}.prediction_type")
    if prediction_type is not None:
        set_prediction_type(pipe.scheduler, prediction_type, f"{key}.prediction_type")
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False)
    return Components(pipe, noise_scheduler, resolved)


def make_accelerator(settings: FinetuneSettings) -> Accelerator:
    """Build the Accelerator that handles device placement, mixed precision and accumulation."""
    device = resolve_device(settings.device, f"{settings.key}.device")
    mixed = check_mixed_precision(
        settings.mixed_precision, device, f"{settings.key}.mixed_precision"
    )
    # NOTE: accelerate keeps one state per process and raises when a second Accelerator requests
    # another mixed precision. Clearing it (a private accelerate call, tested with accelerate
    # 1.16) lets one process fine-tune twice, as the tests and notebooks do.
    if AcceleratorState._shared_state.get("_mixed_precision") not in (None, mixed):
        AcceleratorState._reset_state()
    return Accelerator(
        mixed_precision=mixed,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        cpu=device.type == "cpu",
    )


def weight_dtype(accelerator: Accelerator) -> torch.dtype:
    """Return the dtype for frozen weights: half precision under mixed precision, else float32."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
        accelerator.mixed_precision, torch.float32
    )


def place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Move a module to ``device`` and cast it to ``dtype`` unless that is float32.

    Modules already in float32 are not cast again, which keeps diffusers from warning about
    modules it wants kept in float32.
    """
    module.to(device)
    if dtype != torch.float32:
        module.to(dtype=dtype)


def denoising_loss(
    components: Components,
    unet: torch.nn.Module,
    text_encoder: torch.nn.Module,
    batch: Mapping[str, torch.Tensor],
    dtype: torch.dtype,
    prior_loss_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Return the training loss of a batch and its parts for logging.

    The loss is the mean squared error between the UNet output and its target, averaged over
    the fine-tuning images, plus ``prior_loss_weight`` times the same over prior images
    (the class-specific prior-preservation loss of DreamBooth, Ruiz et al., CVPR 2023).
    """
    vae = components.vae
    pixels = batch["pixel_values"].to(dtype=dtype)
    latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
    noise = torch.randn_like(latents)
    scheduler = components.noise_scheduler
    timesteps = torch.randint(
        0, scheduler.config.num_train_timesteps, (latents.shape[0],), device=latents.device
    )
    noisy = scheduler.add_noise(latents, noise, timesteps)
    encoder_states = text_encoder(batch["input_ids"], return_dict=False)[0]
    prediction = unet(noisy, timesteps, encoder_states, return_dict=False)[0]
    if components.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise

    # (B,) per-image errors, so fine-tuning and prior images can be weighted apart.
    per_image = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    prior = batch["prior"].to(per_image.device)
    instance_loss = per_image[~prior].mean()
    parts = {"instance_loss": float(instance_loss.detach())}
    loss = instance_loss
    if prior.any():
        prior_loss = per_image[prior].mean()
        loss = loss + prior_loss_weight * prior_loss
        parts["prior_loss"] = float(prior_loss.detach())
    return loss, parts


def infinite(loader: DataLoader) -> Iterator[dict[str, torch.Tensor]]:
    """Yield batches from ``loader`` epoch after epoch."""
    while True:
        yield from loader


def fit(
    settings: FinetuneSettings,
    components: Components,
    accelerator: Accelerator,
    unet: torch.nn.Module,
    text_encoder: torch.nn.Module,
    param_groups: list[dict[str, Any]],
    dataset: Dataset,
    save: Callable[[Path, int], None],
    prior_loss_weight: float = 0.0,
) -> dict[str, Any]:
    """Run the optimisation loop and save checkpoints; return a summary with losses and speed.

    ``unet`` and ``text_encoder`` are the modules being trained (prepared by ``accelerator``);
    ``save(folder, step)`` writes a checkpoint.

    Raises:
        FloatingPointError: the loss became NaN or infinite.
    """
    set_seed(settings.seed)
    params = [p for group in param_groups for p in group["params"]]
    optimizer = torch.optim.AdamW(param_groups, weight_decay=settings.weight_decay)
    lr_scheduler = get_scheduler(
        settings.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=settings.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=settings.max_steps * accelerator.num_processes,
    )
    generator = torch.Generator().manual_seed(settings.seed)
    loader = DataLoader(
        dataset,
        batch_size=settings.batch_size,
        shuffle=True,
        collate_fn=collate,
        num_workers=settings.num_workers,
        generator=generator,
        drop_last=len(dataset) >= settings.batch_size,
    )
    optimizer, loader, lr_scheduler = accelerator.prepare(optimizer, loader, lr_scheduler)
    dtype = weight_dtype(accelerator)
    _log_start(settings, accelerator, dataset, params, components.prediction_type)

    trained = [m for m in (unet, text_encoder) if any(p.requires_grad for p in m.parameters())]
    for module in trained:
        module.train()
    step = 0
    history: list[dict[str, float]] = []
    # Losses of the micro-batches of the current optimizer update, averaged when it completes.
    pending: list[dict[str, float]] = []
    started = window_start = time.perf_counter()
    batches = infinite(loader)
    while step < settings.max_steps:
        batch = next(batches)
        with accelerator.accumulate(*trained):
            loss, parts = denoising_loss(
                components, unet, text_encoder, batch, dtype, prior_loss_weight
            )
            if not math.isfinite(float(loss.detach())):
                raise FloatingPointError(
                    f"The loss became {float(loss)} at step {step + 1}. Lower "
                    f"{settings.key}.learning_rate, or use {settings.key}.mixed_precision=bf16 "
                    "instead of fp16."
                )
            accelerator.backward(loss)
            if accelerator.sync_gradients and settings.max_grad_norm > 0:
                accelerator.clip_grad_norm_(params, settings.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        pending.append({"loss": float(loss.detach()), **parts})
        if not accelerator.sync_gradients:
            continue

        step += 1
        history.append({"step": step, **pd.DataFrame(pending).mean().to_dict()})
        pending = []
        if step % settings.log_every == 0 or step == settings.max_steps:
            now = time.perf_counter()
            window = (
                settings.log_every if step % settings.log_every == 0 else step % settings.log_every
            )
            log.info(
                "step %d/%d  loss %.4f  lr %.2e  %.2f steps/s",
                step,
                settings.max_steps,
                history[-1]["loss"],
                lr_scheduler.get_last_lr()[0],
                window / max(now - window_start, 1e-9),
            )
            window_start = now
        every = settings.checkpoint_every
        if every is not None and step % every == 0 and step < settings.max_steps:
            save(Path(settings.output_dir) / f"checkpoint-{step}", step)

    seconds = time.perf_counter() - started
    save(Path(settings.output_dir), step)
    images = step * settings.batch_size * settings.gradient_accumulation_steps
    summary = {
        "steps": step,
        "seconds": seconds,
        "steps_per_s": step / max(seconds, 1e-9),
        "images_per_s": images / max(seconds, 1e-9),
        "final_loss": history[-1]["loss"],
        "history": history,
    }
    log.info(
        "Fine-tuning took %.1f s: %d steps, %.2f steps/s, %.2f images/s, final loss %.4f",
        seconds,
        step,
        summary["steps_per_s"],
        summary["images_per_s"],
        summary["final_loss"],
    )
    return summary


def write_summary(folder: Path, settings: FinetuneSettings, method: str, summary: Mapping) -> None:
    """Write ``finetune.json``: the method, its settings and the run's figures."""
    content = {"method": method, "settings": settings.to_dict(), **summary}
    (folder / SUMMARY_FILE).write_text(json.dumps(content, indent=2, default=str))


def write_model_sidecars(
    folder: Path, settings: FinetuneSettings, base_model: str, step: int
) -> None:
    """Copy the set's prompts and record provenance beside a saved model or checkpoint."""
    data_dir = Path(settings.data_dir)
    if (data_dir / PROMPTS_FILE).is_file():
        shutil.copyfile(data_dir / PROMPTS_FILE, folder / PROMPTS_FILE)
    write_provenance(
        folder,
        settings.key,
        inputs=[data_dir],
        details={"base_model": base_model, "step": step, "settings": settings.to_dict()},
    )


def finetune_captions(metadata: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Return the image paths and captions of a fine-tuning set's metadata."""
    return metadata["path"].tolist(), metadata["text"].astype(str).tolist()


def _log_start(
    settings: FinetuneSettings,
    accelerator: Accelerator,
    dataset: Dataset,
    params: list[torch.nn.Parameter],
    prediction_type: str,
) -> None:
    effective = (
        settings.batch_size * settings.gradient_accumulation_steps * accelerator.num_processes
    )
    log.info(
        "Fine-tuning (%s): %d training examples, effective batch size %d, %d steps, "
        "%d trainable parameters, %s prediction, mixed precision %s, device %s",
        settings.key,
        len(dataset),
        effective,
        settings.max_steps,
        sum(p.numel() for p in params),
        prediction_type,
        accelerator.mixed_precision,
        accelerator.device,
    )
