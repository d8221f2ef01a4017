"""OmegaConf resolvers that configs use; registered before Hydra composes a config."""

from __future__ import annotations

import os

from omegaconf import OmegaConf


def register_resolvers() -> None:
    """Register ``${pid:}`` and ``${cwd:}``.

    ``${pid:}`` keeps run folders of jobs started in the same microsecond apart. ``${cwd:}`` is the
    folder the command started in; unlike ``${hydra:runtime.cwd}`` it also resolves when a
    multirun builds its sweep folder, before any job exists.
    """
    if not OmegaConf.has_resolver("pid"):
        OmegaConf.register_new_resolver("pid", os.getpid, use_cache=True)
    if not OmegaConf.has_resolver("cwd"):
        OmegaConf.register_new_resolver("cwd", os.getcwd, use_cache=True)
