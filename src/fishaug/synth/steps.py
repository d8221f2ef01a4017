"""The steps of ``python synth.py step=<name>``, each a function of the composed config.

Step modules are imported only when their step runs, because diffusers and transformers take
seconds to import and a misspelt step should fail at once.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fishaug.errors import ConfigError

log = logging.getLogger(__name__)

# Step name to "module:function", in the order of the workflow.
STEPS = {
    "tiny_model": "fishaug.synth.tiny:run_tiny_model",
    "prepare": "fishaug.synth.prepare:run_prepare",
    "lora": "fishaug.synth.lora:run_lora",
    "dreambooth": "fishaug.synth.dreambooth:run_dreambooth",
    "merge": "fishaug.synth.merge:run_merge",
    "grid": "fishaug.synth.grid:run_grid",
    "generate": "fishaug.synth.generate:run_generate",
    "filter": "fishaug.synth.filtering:run_filter",
}


def run_step(cfg: DictConfig) -> Any:
    """Run the step that ``cfg.step`` names and return its result.

    Raises:
        ConfigError: ``step`` is missing or not a step name, or the step rejects its settings.
    """
    if OmegaConf.is_missing(cfg, "step") or cfg.step not in STEPS:
        value = "not set" if OmegaConf.is_missing(cfg, "step") else f"{cfg.step!r}"
        raise ConfigError(f"step is {value}; use step=<name> with one of {list(STEPS)}.")
    module_name, function_name = STEPS[cfg.step].split(":")
    log.info("Step %s, work folder %s", cfg.step, cfg.get("work_dir"))
    function = getattr(importlib.import_module(module_name), function_name)
    return function(cfg)
