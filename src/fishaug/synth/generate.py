"""Generate a synthetic set: ``per_class`` images per class and model, with fixed seeds.

Image ``i`` of every class and model uses the seed ``seed + i``, so images of two models (or
two LoRA scales) with the same seed start from the same noise and compare side by side.

The output folder::

    <model>/<label>/<label>_<seed>.png   accepted images
    rejected/<model>/<label>/...         black or blank images (kept for inspection)
    generated.jsonl                      one record per image made so far, read on resume
    models.json                          each model's settings; a resume with other settings stops
    manifest.csv, provenance.json        the synthetic set, written when every image is done
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from diffusers import DiffusionPipeline
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from fishaug.errors import ConfigError, DataError
from fishaug.synth.models import apply_memory_options, load_lora, load_pipeline, lora_weights_file
from fishaug.synth.provenance import PROVENANCE_FILE, write_provenance
from fishaug.synth.runtime import fresh_output_dir, resolve_device, resolve_dtype
from fishaug.synth.sets import write_set_manifest
from fishaug.synth.species import ClassPrompts, class_prompts, read_prompts

log = logging.getLogger(__name__)

GENERATED_LOG = "generated.jsonl"
MODELS_FILE = "models.json"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ModelSpec:
    """A generator: a pipeline (folder or Hub id), optionally with a LoRA applied at a scale."""

    name: str
    path: str
    lora: str | None = None
    lora_scale: float = 1.0


@dataclass(frozen=True)
class SamplerSettings:
    """Sampling settings: steps, guidance, resolution and prompt additions."""

    num_inference_steps: int = 30
    guidance_scale: float = 7.5
    resolution: int = 512
    prompt_suffix: str | None = None
    negative_prompt: str | None = None

    def check(self, key: str) -> None:
        if self.num_inference_steps < 1:
            raise ConfigError(
                f"{key}.num_inference_steps={self.num_inference_steps} is out of range; use >= 1."
            )
        if self.guidance_scale < 0:
            raise ConfigError(
                f"{key}.guidance_scale={self.guidance_scale} is out of range; use >= 0."
            )
        if self.resolution < 8 or self.resolution % 8 != 0:
            raise ConfigError(
                f"{key}.resolution={self.resolution} is not valid; use a multiple of 8."
            )

    def prompt(self, prefix: str) -> str:
        return f"{prefix}, {self.prompt_suffix}" if self.prompt_suffix else prefix


def parse_models(
    entries: Iterable[Mapping[str, Any]], base_model: str, key: str
) -> list[ModelSpec]:
    """Turn config entries ``{name, path, lora, lora_scale}`` into model specs.

    ``path`` defaults to ``base_model``.

    Raises:
        ConfigError: the list is empty, an entry lacks a valid name, names repeat, or a key is
            unknown.
    """
    specs = []
    for i, entry in enumerate(entries or []):
        entry = dict(entry)
        unknown = sorted(set(entry) - {"name", "path", "lora", "lora_scale"})
        if unknown:
            raise ConfigError(
                f"{key}[{i}] has unknown key(s) {unknown}; use name, path, lora and lora_scale."
            )
        name = str(entry.get("name") or "")
        if not NAME.match(name):
            raise ConfigError(
                f"{key}[{i}].name={name!r} is not valid; use letters, digits, '.', '_' and '-'."
            )
        scale = entry.get("lora_scale")
        specs.append(
            ModelSpec(
                name=name,
                path=str(entry.get("path") or base_model),
                lora=None if entry.get("lora") is None else str(entry["lora"]),
                lora_scale=1.0 if scale is None else float(scale),
            )
        )
    if not specs:
        raise ConfigError(f"{key} is empty; list at least one model.")
    names = [spec.name for spec in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"{key} uses the name(s) {repeated} more than once.")
    return specs


def load_model(
    spec: ModelSpec,
    device: torch.device,
    dtype: torch.dtype,
    memory: Mapping[str, Any],
    key: str,
    memory_key: str,
    local_files_only: bool = False,
    safety_checker: bool = False,
) -> DiffusionPipeline:
    """Load a spec's pipeline, apply its LoRA and the memory options; return it on ``device``.

    ``key`` names the spec in messages (``generate.models[0]``), ``memory_key`` the options.

    Raises:
        ConfigError: the pipeline or the LoRA is missing, or a memory option is invalid.
    """
    pipe = load_pipeline(
        spec.path,
        f"{key}.path",
        dtype=dtype,
        local_files_only=local_files_only,
        safety_checker=safety_checker,
    )
    if spec.lora is not None:
        load_lora(pipe, spec.lora, spec.lora_scale, f"{key}.lora")
    return apply_memory_options(pipe, memory, device, memory_key)


def check_loras(models: Sequence[ModelSpec], key: str) -> None:
    """Raise a ConfigError for a model whose LoRA is missing or empty (see :func:`lora_weights_file`)."""
    for i, spec in enumerate(models):
        if spec.lora is not None:
            lora_weights_file(spec.lora, f"{key}[{i}].lora")


def model_prompts(
    spec: ModelSpec,
    classes: Sequence[str] | None,
    fallback: Mapping[str, Any],
    classes_key: str,
) -> dict[str, ClassPrompts]:
    """Return the prompts of the classes to generate for a model.

    They come from ``prompts.json`` beside the LoRA or in the model folder, written when the
    model was fine-tuned. A model without one (a base model) needs ``classes`` and uses the
    caption table (``fallback``: ``template``, ``class_template``, ``species``).

    Raises:
        ConfigError: a requested class is not one the model was fine-tuned on, or a model
            without prompts has no ``classes`` to generate.
    """
    stored = None
    for folder in (spec.lora, spec.path):
        if folder is not None and Path(folder).is_dir():
            stored = read_prompts(folder)
            if stored is not None:
                break
    if stored is None:
        if not classes:
            raise ConfigError(
                f"Model '{spec.name}' has no prompts.json (it was not fine-tuned with "
                f"synth.py), so {classes_key} must list the classes to generate."
            )
        return class_prompts(
            classes, fallback["template"], fallback["class_template"], fallback.get("species")
        )
    if classes is None:
        return stored
    unknown = sorted(set(classes) - set(stored))
    if unknown:
        raise ConfigError(
            f"Model '{spec.name}' was fine-tuned on {sorted(stored)}, not on {unknown}; "
            "generate only those classes or fine-tune on them first."
        )
    return {label: stored[label] for label in classes}


def is_blank(image: Image.Image, min_std: float) -> bool:
    """True when the image's grey levels vary less than ``min_std`` (0-255 units): black or flat."""
    return float(np.asarray(image.convert("L"), dtype=np.float32).std()) < min_std


def render(
    pipe: DiffusionPipeline,
    prompts: Sequence[str],
    seeds: Sequence[int],
    sampler: SamplerSettings,
) -> tuple[list[Image.Image], list[bool]]:
    """Sample one image per prompt with its own seed; return the images and the safety flags.

    The noise comes from CPU generators, so a seed gives the same starting noise on any device.
    """
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    negative = [sampler.negative_prompt] * len(prompts) if sampler.negative_prompt else None
    output = pipe(
        prompt=list(prompts),
        negative_prompt=negative,
        num_inference_steps=sampler.num_inference_steps,
        guidance_scale=sampler.guidance_scale,
        height=sampler.resolution,
        width=sampler.resolution,
        generator=generators,
        output_type="pil",
    )
    flags = output.nsfw_content_detected or [False] * len(prompts)
    return list(output.images), [bool(flag) for flag in flags]


def generate_set(
    models: Sequence[ModelSpec],
    prompts_of: Mapping[str, Mapping[str, ClassPrompts]],
    output_dir: str | Path,
    sampler: SamplerSettings,
    per_class: int,
    seed: int = 0,
    set_id: str = "synthetic",
    batch_size: int = 4,
    blank_std: float = 2.0,
    max_rejected_fraction: float = 0.1,
    device: str = "auto",
    dtype: str = "auto",
    memory: Mapping[str, Any] | None = None,
    local_files_only: bool = False,
    safety_checker: bool = False,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Generate the images of every model and class, resuming where an earlier run stopped.

    Args:
        prompts_of: model name to its classes' prompts.
        per_class: images per class and model; image ``i`` uses seed ``seed + i``.
        set_id: the set's id, written as ``video`` and ``source`` of every row.
        blank_std: images whose grey levels vary less than this (0-255) are rejected as blank.
        max_rejected_fraction: the step fails when a model's rejected share exceeds this.

    Returns the set's manifest rows.

    Raises:
        ConfigError: a setting is invalid, or the folder contains images made with other settings.
        DataError: more than ``max_rejected_fraction`` of a model's images were black or blank.
    """
    sampler.check("generate")
    _check_counts(per_class, batch_size, blank_std, max_rejected_fraction)
    if not NAME.match(set_id):
        raise ConfigError(
            f"generate.set_id={set_id!r} is not valid; use letters, digits, '.', '_', '-'."
        )
    torch_device = resolve_device(device, "generate.device")
    torch_dtype = resolve_dtype(dtype, torch_device, "generate.dtype")
    output = Path(output_dir)
    if overwrite:
        fresh_output_dir(output, True, "generate.output_dir", (GENERATED_LOG, MODELS_FILE))
    # A missing LoRA or provenance stops the step before any image is made.
    check_loras(models, "generate.models")
    inputs = _provenance_inputs(models)
    output.mkdir(parents=True, exist_ok=True)
    _check_resume(output, models, prompts_of, sampler)

    done = _read_log(output)
    for i, spec in enumerate(models):
        wanted = [
            (label, seed + k) for label in sorted(prompts_of[spec.name]) for k in range(per_class)
        ]
        pending = [item for item in wanted if (spec.name, *item) not in done]
        if pending:
            pipe = load_model(
                spec,
                torch_device,
                torch_dtype,
                memory or {},
                f"generate.models[{i}]",
                "generate.memory",
                local_files_only,
                safety_checker,
            )
            _generate_pending(
                pipe,
                spec,
                prompts_of[spec.name],
                pending,
                output,
                sampler,
                batch_size,
                blank_std,
                done,
            )
            del pipe
            if torch_device.type == "cuda":
                torch.cuda.empty_cache()
        else:
            log.info("Model '%s': all %d images exist already.", spec.name, len(wanted))
        _check_rejected(
            spec.name, [done[(spec.name, *item)] for item in wanted], max_rejected_fraction
        )

    rows = _manifest_rows(output, models, prompts_of, per_class, seed, set_id, done)
    write_set_manifest(output, rows)
    write_provenance(
        output,
        "generated",
        inputs=inputs,
        details={
            "set_id": set_id,
            "models": [asdict(spec) for spec in models],
            "per_class": per_class,
            "seed": seed,
            "sampler": asdict(sampler),
        },
    )
    log.info("Synthetic set '%s': %d images in %s", set_id, len(rows), output / "manifest.csv")
    return rows


def run_generate(cfg: DictConfig) -> pd.DataFrame:
    """Make the synthetic set that ``cfg.generate`` describes (the ``generate`` step)."""
    settings = OmegaConf.to_container(cfg.generate, resolve=True)
    models = parse_models(settings["models"], cfg.base.model, "generate.models")
    check_loras(models, "generate.models")
    fallback = {
        **OmegaConf.to_container(cfg.caption, resolve=True),
        "species": OmegaConf.to_container(cfg.species, resolve=True),
    }
    classes = settings["classes"]
    prompts_of = {
        spec.name: model_prompts(spec, classes, fallback, "generate.classes") for spec in models
    }
    sampler = SamplerSettings(**settings["sampler"])
    return generate_set(
        models,
        prompts_of,
        settings["output_dir"],
        sampler,
        per_class=settings["per_class"],
        seed=settings["seed"],
        set_id=settings["set_id"],
        batch_size=settings["batch_size"],
        blank_std=settings["blank_std"],
        max_rejected_fraction=settings["max_rejected_fraction"],
        device=settings["device"],
        dtype=settings["dtype"],
        memory=settings["memory"],
        local_files_only=cfg.base.local_files_only,
        safety_checker=settings["safety_checker"],
        overwrite=settings["overwrite"],
    )


def _generate_pending(
    pipe: DiffusionPipeline,
    spec: ModelSpec,
    prompts: Mapping[str, ClassPrompts],
    pending: list[tuple[str, int]],
    output: Path,
    sampler: SamplerSettings,
    batch_size: int,
    blank_std: float,
    done: dict[tuple[str, str, int], dict[str, Any]],
) -> None:
    started = time.perf_counter()
    rejected = 0
    with (output / GENERATED_LOG).open("a", encoding="utf-8") as log_file:
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            texts = [sampler.prompt(prompts[label].prefix) for label, _ in batch]
            images, flags = render(pipe, texts, [s for _, s in batch], sampler)
            for (label, image_seed), text, image, flagged in zip(
                batch, texts, images, flags, strict=True
            ):
                status = "ok"
                if flagged:
                    status = "safety_checker"
                elif is_blank(image, blank_std):
                    status = "blank"
                folder = output / ("" if status == "ok" else "rejected") / spec.name / label
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / f"{label}_{image_seed:06d}.png"
                image.save(path)
                record = {
                    "model": spec.name,
                    "label": label,
                    "seed": image_seed,
                    "file": path.relative_to(output).as_posix(),
                    "prompt": text,
                    "status": status,
                }
                log_file.write(json.dumps(record) + "\n")
                done[(spec.name, label, image_seed)] = record
                rejected += status != "ok"
            log_file.flush()
    seconds = time.perf_counter() - started
    log.info(
        "Model '%s': generated %d images in %.1f s (%.2f images/s), %d rejected as black or blank",
        spec.name,
        len(pending),
        seconds,
        len(pending) / max(seconds, 1e-9),
        rejected,
    )


def _check_rejected(name: str, records: list[dict[str, Any]], max_fraction: float) -> None:
    statuses = pd.Series([record["status"] for record in records])
    rejected = int((statuses != "ok").sum())
    if rejected > max_fraction * len(records):
        reasons = statuses[statuses != "ok"].value_counts().to_dict()
        raise DataError(
            f"Model '{name}': {rejected} of {len(records)} generated images were black or blank "
            f"({reasons}), more than generate.max_rejected_fraction={max_fraction}. Images "
            "blacked out by the safety checker go away with generate.safety_checker=false; blank "
            "ones point at a broken model, a LoRA scale too high, or fp16 overflow "
            "(try generate.dtype=float32 or bfloat16). They are kept under rejected/."
        )


def _manifest_rows(output, models, prompts_of, per_class, seed, set_id, done) -> pd.DataFrame:
    rows = []
    for spec in models:
        for label in sorted(prompts_of[spec.name]):
            for k in range(per_class):
                record = done[(spec.name, label, seed + k)]
                if record["status"] != "ok":
                    continue
                rows.append(
                    {
                        "path": str(output / record["file"]),
                        "label": label,
                        "video": set_id,
                        "source": set_id,
                        "model": spec.name,
                        "seed": record["seed"],
                        "prompt": record["prompt"],
                    }
                )
    if not rows:
        raise DataError(f"No image of '{output}' was accepted, so the set would be empty.")
    return pd.DataFrame(rows)


def _read_log(output: Path) -> dict[tuple[str, str, int], dict[str, Any]]:
    done: dict[tuple[str, str, int], dict[str, Any]] = {}
    path = output / GENERATED_LOG
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            # A run killed while writing leaves a partial last line; its image is made again.
            continue
        # Rejected images are made again: the settings that rejected them may have changed
        # (the safety checker turned off, for example).
        if record["status"] != "ok" or not (output / record["file"]).is_file():
            continue
        done[(record["model"], record["label"], int(record["seed"]))] = record
    if done:
        log.info("Resuming: %d images of %s exist already.", len(done), output)
    return done


def _check_resume(output, models, prompts_of, sampler) -> None:
    """Stop a resume whose model settings differ from those the folder's images were made with."""
    path = output / MODELS_FILE
    current = {
        spec.name: {
            **asdict(spec),
            "prompts": {
                label: sampler.prompt(p.prefix)
                for label, p in sorted(prompts_of[spec.name].items())
            },
            "sampler": asdict(sampler),
        }
        for spec in models
    }
    stored = json.loads(path.read_text()) if path.is_file() else {}
    changed = sorted(name for name in current if name in stored and stored[name] != current[name])
    if changed:
        raise ConfigError(
            f"generate.output_dir='{output}' contains images of model(s) {changed} made with other "
            "settings (see models.json). Give the models new names, choose another "
            "generate.output_dir, or set generate.overwrite=true to start again."
        )
    path.write_text(json.dumps({**stored, **current}, indent=2))


def _provenance_inputs(models: Sequence[ModelSpec]) -> list[str]:
    inputs = []
    for spec in models:
        if spec.lora is not None:
            # A LoRA is always fine-tuned on something; read_provenance stops when it is unknown.
            lora = Path(spec.lora)
            inputs.append(str(lora if lora.is_dir() else lora.parent))
        if (Path(spec.path) / PROVENANCE_FILE).is_file():
            inputs.append(spec.path)
        elif spec.lora is None:
            log.info(
                "Model '%s' at '%s' has no provenance file; it counts as a base model that saw "
                "none of the dataset's videos.",
                spec.name,
                spec.path,
            )
    return inputs


def _check_counts(per_class, batch_size, blank_std, max_rejected_fraction) -> None:
    for key, value in (("generate.per_class", per_class), ("generate.batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key}={value!r} is out of range; use a whole number >= 1.")
    if blank_std < 0:
        raise ConfigError(f"generate.blank_std={blank_std} is out of range; use >= 0.")
    if not 0 <= max_rejected_fraction <= 1:
        raise ConfigError(
            f"generate.max_rejected_fraction={max_rejected_fraction} is out of range; use 0 to 1."
        )
