"""Comparison grids for picking a checkpoint: fixed-seed samples per checkpoint, LoRA scale and class.

One PNG per class: a row per candidate (a checkpoint at a LoRA scale), a column per seed, so
every cell in a column starts from the same noise and differences come from the weights alone.
``grid.csv`` lists the candidates with the folders to pass to the generate step.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageDraw, ImageFont

from fishaug.errors import ConfigError
from fishaug.synth.generate import (
    ModelSpec,
    SamplerSettings,
    load_model,
    model_prompts,
    parse_models,
    render,
)
from fishaug.synth.models import LORA_WEIGHTS, load_lora
from fishaug.synth.runtime import resolve_device, resolve_dtype

log = logging.getLogger(__name__)

LABEL_WIDTH = 160
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class Candidate:
    """One grid row: a model spec and the text drawn beside it."""

    title: str
    spec: ModelSpec


def find_candidates(
    checkpoints_of: str | Path, base_model: str, scales: Sequence[float]
) -> list[Candidate]:
    """List the checkpoints of a fine-tuning output folder, in step order, the final one last.

    A LoRA checkpoint gives one candidate per scale on ``base_model``; a full pipeline
    (DreamBooth) gives one candidate.

    Raises:
        ConfigError: the folder does not exist or contains neither LoRA weights nor a pipeline.
    """
    folder = Path(checkpoints_of).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"grid.checkpoints_of='{checkpoints_of}' does not exist; pass the output folder of "
            "`synth.py step=lora` or `step=dreambooth`."
        )
    steps = sorted(
        (int(match[1]), path)
        for path in folder.iterdir()
        if path.is_dir() and (match := CHECKPOINT.match(path.name))
    )
    candidates = []
    for title, path in [(p.name, p) for _, p in steps] + [("final", folder)]:
        if (path / LORA_WEIGHTS).is_file():
            for scale in scales:
                spec = ModelSpec(f"{title}-x{scale:g}", base_model, str(path), float(scale))
                candidates.append(Candidate(f"{title} x{scale:g}", spec))
        elif (path / "model_index.json").is_file():
            candidates.append(Candidate(title, ModelSpec(title, str(path))))
    if not candidates:
        raise ConfigError(
            f"grid.checkpoints_of='{checkpoints_of}' contains no LoRA weights ({LORA_WEIGHTS}) and "
            "no pipeline (model_index.json), neither itself nor in checkpoint-<step> folders."
        )
    return candidates


def make_grids(
    candidates: Sequence[Candidate],
    prompts_of: Mapping[str, Mapping[str, Any]],
    seeds: Sequence[int],
    sampler: SamplerSettings,
    output_dir: str | Path,
    cell_size: int = 256,
    device: str = "auto",
    dtype: str = "auto",
    memory: Mapping[str, Any] | None = None,
    local_files_only: bool = False,
) -> list[Path]:
    """Render every candidate for every class and seed; write ``grid_<label>.png`` and ``grid.csv``.

    LoRA candidates on the same base share one loaded pipeline, with the adapter swapped.

    Raises:
        ConfigError: no seeds, a cell size below 16, or a model that cannot be loaded.
    """
    if not seeds:
        raise ConfigError("grid.seeds is empty; list at least one seed.")
    if cell_size < 16:
        raise ConfigError(f"grid.cell_size={cell_size} is out of range; use 16 or more pixels.")
    sampler.check("grid")
    torch_device = resolve_device(device, "grid.device")
    torch_dtype = resolve_dtype(dtype, torch_device, "grid.dtype")
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)

    cells: dict[tuple[str, str], list[Image.Image]] = {}
    pipe = None
    loaded_base = None
    for i, candidate in enumerate(candidates):
        spec = candidate.spec
        key = f"grid candidate '{candidate.title}'"
        if spec.lora is None:
            pipe = load_model(
                spec, torch_device, torch_dtype, memory or {}, key, "grid.memory", local_files_only
            )
            loaded_base = None
        else:
            if loaded_base != spec.path:
                bare = ModelSpec(spec.name, spec.path)
                pipe = load_model(
                    bare,
                    torch_device,
                    torch_dtype,
                    memory or {},
                    key,
                    "grid.memory",
                    local_files_only,
                )
                loaded_base = spec.path
            pipe.unload_lora_weights()
            load_lora(pipe, spec.lora, spec.lora_scale, f"{key}.lora", adapter_name=f"c{i}")
        for label, prompts in sorted(prompts_of[spec.name].items()):
            text = sampler.prompt(prompts.prefix)
            images, _ = render(pipe, [text] * len(seeds), seeds, sampler)
            cells[(candidate.title, label)] = images
        log.info("Grid: rendered %s (%d of %d)", candidate.title, i + 1, len(candidates))

    labels = sorted({label for _, label in cells})
    written = []
    for label in labels:
        rows = [(c.title, cells[(c.title, label)]) for c in candidates if (c.title, label) in cells]
        path = output / f"grid_{label}.png"
        prefix = next(
            prompts_of[c.spec.name][label].prefix
            for c in candidates
            if label in prompts_of[c.spec.name]
        )
        _draw_grid(rows, seeds, cell_size, f"{label}: {prefix}").save(path)
        written.append(path)
    pd.DataFrame(
        [
            {
                "row": c.title,
                "name": c.spec.name,
                "path": c.spec.path,
                "lora": c.spec.lora,
                "lora_scale": c.spec.lora_scale if c.spec.lora else None,
            }
            for c in candidates
        ]
    ).to_csv(output / "grid.csv", index=False)
    log.info(
        "Wrote %d grids (%d candidates x %d seeds) to %s",
        len(written),
        len(candidates),
        len(seeds),
        output,
    )
    return written


def run_grid(cfg: DictConfig) -> list[Path]:
    """Compare the checkpoints that ``cfg.grid`` names (the ``grid`` step)."""
    settings = OmegaConf.to_container(cfg.grid, resolve=True)
    candidates = []
    if settings["checkpoints_of"] is not None:
        candidates += find_candidates(
            settings["checkpoints_of"], cfg.base.model, settings["scales"]
        )
    if settings["models"]:
        specs = parse_models(settings["models"], cfg.base.model, "grid.models")
        candidates += [Candidate(spec.name, spec) for spec in specs]
    if not candidates:
        raise ConfigError("Nothing to compare: set grid.checkpoints_of or list grid.models.")
    fallback = {
        **OmegaConf.to_container(cfg.caption, resolve=True),
        "species": OmegaConf.to_container(cfg.species, resolve=True),
    }
    prompts_of = {
        c.spec.name: model_prompts(c.spec, settings["classes"], fallback, "grid.classes")
        for c in candidates
    }
    return make_grids(
        candidates,
        prompts_of,
        settings["seeds"],
        SamplerSettings(**settings["sampler"]),
        settings["output_dir"],
        cell_size=settings["cell_size"],
        device=settings["device"],
        dtype=settings["dtype"],
        memory=settings["memory"],
        local_files_only=cfg.base.local_files_only,
    )


def _draw_grid(
    rows: Sequence[tuple[str, Sequence[Image.Image]]], seeds: Sequence[int], cell: int, title: str
) -> Image.Image:
    header = 24
    font = ImageFont.load_default()
    title_width = round(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(title, font=font))
    width = max(LABEL_WIDTH + cell * len(seeds), title_width + 8)
    grid = Image.new("RGB", (width, header * 2 + cell * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    draw.text((4, 4), title, fill=(0, 0, 0), font=font)
    for j, seed in enumerate(seeds):
        draw.text(
            (LABEL_WIDTH + j * cell + 4, header + 4), f"seed {seed}", fill=(0, 0, 0), font=font
        )
    for i, (title_text, images) in enumerate(rows):
        top = header * 2 + i * cell
        draw.text((4, top + cell // 2), title_text, fill=(0, 0, 0), font=font)
        for j, image in enumerate(images):
            grid.paste(
                image.resize((cell, cell), Image.Resampling.LANCZOS), (LABEL_WIDTH + j * cell, top)
            )
    return grid
