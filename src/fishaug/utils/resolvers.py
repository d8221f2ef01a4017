"""OmegaConf resolvers that configs use; registered before Hydra composes a config."""

from __future__ import annotations

import os

from omegaconf import OmegaConf


def register_resolvers() -> None:
    """Register ``${pid:}``, which keeps run folders of jobs started in the same microsecond apart."""
    if not OmegaConf.has_resolver("pid"):
        OmegaConf.register_new_resolver("pid", os.getpid, use_cache=True)
