"""Merge recipes: weighted sums of checkpoints of one base model, then LoRAs fused at a scale.

A recipe such as ``{name: mix, checkpoints: [{path: A, weight: 0.6}, {path: B, weight: 0.4}],
loras: [{path: L, scale: 0.8}]}`` gives ``0.6 A + 0.4 B`` for every floating-point weight of the
UNet, text encoder and VAE, then adds 0.8 times the LoRA update ``(alpha / rank) B A`` to the
layers it adapts. Each recipe is saved as a full pipeline folder under ``merge.output_dir``.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from fishaug.errors import ConfigError
from fishaug.synth.generate import NAME
from fishaug.synth.models import load_lora, load_pipeline
from fishaug.synth.provenance import PROVENANCE_FILE, write_provenance
from fishaug.synth.runtime import fresh_output_dir
from fishaug.synth.species import PROMPTS_FILE

log = logging.getLogger(__name__)

COMPONENTS = ("unet", "text_encoder", "vae")


@dataclass(frozen=True)
class MergeRecipe:
    """A named merge: ``(path, weight)`` checkpoints summed, then ``(path, scale)`` LoRAs fused."""

    name: str
    checkpoints: tuple[tuple[str, float], ...]
    loras: tuple[tuple[str, float], ...] = ()


def parse_recipes(entries: Iterable[Mapping[str, Any]], base_model: str) -> list[MergeRecipe]:
    """Turn ``merge.recipes`` entries into recipes; a recipe without checkpoints starts from the base.

    Raises:
        ConfigError: a name is missing, invalid or repeated, a weight or scale is not a finite
            number, or a recipe has neither two checkpoints nor a LoRA (nothing to merge).
    """
    recipes = []
    for i, entry in enumerate(entries or []):
        key = f"merge.recipes[{i}]"
        unknown = sorted(set(entry) - {"name", "checkpoints", "loras"})
        if unknown:
            raise ConfigError(
                f"{key} has unknown key(s) {unknown}; use name, checkpoints and loras."
            )
        name = str(entry.get("name") or "")
        if not NAME.match(name):
            raise ConfigError(
                f"{key}.name={name!r} is not valid; use letters, digits, '.', '_', '-'."
            )
        checkpoints = [
            (
                str(item.get("path") or base_model),
                _number(item.get("weight", 1.0), f"{key}.checkpoints[{j}].weight"),
            )
            for j, item in enumerate(
                entry.get("checkpoints") or [{"path": base_model, "weight": 1.0}]
            )
        ]
        loras = [
            (
                _required(item.get("path"), f"{key}.loras[{j}].path"),
                _number(item.get("scale", 1.0), f"{key}.loras[{j}].scale"),
            )
            for j, item in enumerate(entry.get("loras") or [])
        ]
        if len(checkpoints) < 2 and not loras:
            raise ConfigError(
                f"{key} ('{name}') has one checkpoint and no LoRA, so there is nothing to merge; "
                "list two or more checkpoints or a LoRA."
            )
        total = sum(weight for _, weight in checkpoints)
        if len(checkpoints) > 1 and not math.isclose(total, 1.0, abs_tol=1e-6):
            log.warning(
                "Recipe '%s': checkpoint weights sum to %.4f, not 1, so the merged weights are "
                "scaled by that factor.",
                name,
                total,
            )
        recipes.append(MergeRecipe(name, tuple(checkpoints), tuple(loras)))
    names = [recipe.name for recipe in recipes]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"merge.recipes uses the name(s) {repeated} more than once.")
    if not recipes:
        raise ConfigError("merge.recipes is empty; list at least one recipe.")
    return recipes


def merge(recipe: MergeRecipe, output_dir: str | Path, local_files_only: bool = False) -> Path:
    """Merge one recipe in float32 on the CPU and save it as a pipeline; return its folder.

    Raises:
        ConfigError: a checkpoint or LoRA cannot be loaded, or the checkpoints do not share a
            base (their weights differ in names or shapes).
    """
    (first_path, first_weight), *others = recipe.checkpoints
    pipe = load_pipeline(
        first_path, f"merge '{recipe.name}' checkpoint", local_files_only=local_files_only
    )
    if others or first_weight != 1.0:
        sums = {
            name: _scaled(getattr(pipe, name).state_dict(), first_weight) for name in COMPONENTS
        }
        for path, weight in others:
            other = load_pipeline(
                path, f"merge '{recipe.name}' checkpoint", local_files_only=local_files_only
            )
            for name in COMPONENTS:
                _accumulate(
                    sums[name], getattr(other, name).state_dict(), weight, recipe.name, path, name
                )
            del other
        for name in COMPONENTS:
            getattr(pipe, name).load_state_dict(sums[name])

    for i, (path, scale) in enumerate(recipe.loras):
        adapter = f"merge{i}"
        load_lora(pipe, path, scale, f"merge '{recipe.name}' LoRA", adapter_name=adapter)
        # load_lora set the adapter's weight to `scale`; fusing multiplies by lora_scale on top.
        pipe.fuse_lora(lora_scale=1.0, adapter_names=[adapter])
        pipe.unload_lora_weights()

    folder = fresh_output_dir(Path(output_dir) / recipe.name, True, "merge.output_dir")
    pipe.save_pretrained(folder)
    _write_sidecars(folder, recipe)
    log.info(
        "Merged '%s' (%s; LoRAs %s) into %s",
        recipe.name,
        ", ".join(f"{w:g} x {p}" for p, w in recipe.checkpoints),
        ", ".join(f"{s:g} x {p}" for p, s in recipe.loras) or "none",
        folder,
    )
    return folder


def run_merge(cfg: DictConfig) -> list[Path]:
    """Build every recipe of ``cfg.merge.recipes`` (the ``merge`` step)."""
    settings = OmegaConf.to_container(cfg.merge, resolve=True)
    recipes = parse_recipes(settings["recipes"], cfg.base.model)
    return [merge(recipe, settings["output_dir"], cfg.base.local_files_only) for recipe in recipes]


def _scaled(state: Mapping[str, torch.Tensor], weight: float) -> dict[str, torch.Tensor]:
    # Integer buffers (position ids) are copied, not weighted.
    return {
        key: value.float() * weight if value.is_floating_point() else value.clone()
        for key, value in state.items()
    }


def _accumulate(
    total: dict[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    weight: float,
    recipe: str,
    path: str,
    component: str,
) -> None:
    mismatched = sorted(set(total) ^ set(state))
    mismatched += sorted(k for k in set(total) & set(state) if total[k].shape != state[k].shape)
    if mismatched:
        raise ConfigError(
            f"Recipe '{recipe}': the {component} of '{path}' does not match the first checkpoint "
            f"(differing weights {mismatched[:3]}); only checkpoints of one base model can be summed."
        )
    for key, value in state.items():
        if value.is_floating_point():
            total[key] += value.float() * weight


def _write_sidecars(folder: Path, recipe: MergeRecipe) -> None:
    inputs = []
    for path in [p for p, _ in recipe.checkpoints] + [p for p, _ in recipe.loras]:
        location = Path(path)
        location = location if location.is_dir() else location.parent
        is_lora = path in {p for p, _ in recipe.loras}
        # A LoRA always comes from fine-tuning, so its provenance file is required. A checkpoint
        # without one is a base model.
        if is_lora or (location / PROVENANCE_FILE).is_file():
            inputs.append(str(location))
        if not (folder / PROMPTS_FILE).is_file() and (location / PROMPTS_FILE).is_file():
            shutil.copyfile(location / PROMPTS_FILE, folder / PROMPTS_FILE)
    write_provenance(
        folder,
        "merge",
        inputs=dict.fromkeys(inputs),
        details={"checkpoints": recipe.checkpoints, "loras": recipe.loras},
    )


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{key}={value!r} is not valid; use a finite number.")
    return float(value)


def _required(value: Any, key: str) -> str:
    if value is None or str(value) == "":
        raise ConfigError(f"{key} is missing; give the LoRA folder.")
    return str(value)
