"""Device, dtype, mixed-precision and output-folder choices shared by the synthetic-image steps."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from fishaug.errors import ConfigError
from fishaug.synth.provenance import PROVENANCE_FILE

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
MIXED_PRECISION = ("no", "fp16", "bf16")


def resolve_device(device: str, key: str) -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:<i>`` into a device.

    Raises:
        ConfigError: the name is not valid, or CUDA is asked for on a machine without it.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(f"{key}={device!r} is not valid; use auto, cpu or cuda.") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}={device!r} needs a CUDA GPU, and none is visible; use cpu.")
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigError(f"{key}={device!r} is not valid; use auto, cpu or cuda.")
    return resolved


def resolve_dtype(dtype: str, device: torch.device, key: str) -> torch.dtype:
    """Turn ``auto`` (float16 on a GPU, float32 on a CPU) or a dtype name into a torch dtype.

    Raises:
        ConfigError: the name is not valid, or a half-precision dtype is asked for on a CPU,
            where diffusion models run slowly or not at all in it.
    """
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ConfigError(f"{key}={dtype!r} is not valid; use auto or one of {sorted(DTYPES)}.")
    if dtype != "float32" and device.type != "cuda":
        raise ConfigError(f"{key}={dtype} needs a CUDA GPU; use float32 (or auto) on a CPU.")
    return DTYPES[dtype]


def check_mixed_precision(value: str, device: torch.device, key: str) -> str:
    """Validate an accelerate mixed-precision mode (``no``, ``fp16``, ``bf16``) for ``device``.

    Raises:
        ConfigError: the mode is unknown, or fp16/bf16 is asked for on a CPU.
    """
    if value not in MIXED_PRECISION:
        raise ConfigError(f"{key}={value!r} is not valid; use one of {list(MIXED_PRECISION)}.")
    if value != "no" and device.type != "cuda":
        raise ConfigError(f"{key}={value} needs a CUDA GPU; use {key}=no on a CPU.")
    return value


def quiet_progress_bars() -> None:
    """Turn off the per-file and per-step progress bars of diffusers and transformers.

    They write to the terminal, bypassing logging; the steps log their own progress instead.
    """
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def fresh_output_dir(
    folder: str | Path, overwrite: bool, key: str, markers: Sequence[str] = (PROVENANCE_FILE,)
) -> Path:
    """Create ``folder``, or empty it when it contains an earlier output of a step and ``overwrite``.

    An earlier output is recognised by one of the ``markers`` files in the folder or in one of
    its sub-folders (checkpoints). Anything else is never deleted.

    Raises:
        ConfigError: the folder contains an earlier output and ``overwrite`` is false, or it contains
            files that no step wrote.
    """
    folder = Path(folder).expanduser()
    if folder.exists() and any(folder.iterdir()):
        ours = any((folder / name).is_file() or any(folder.glob(f"*/{name}")) for name in markers)
        if not ours:
            raise ConfigError(
                f"{key}='{folder}' is not empty and contains no earlier output of a step; "
                "choose an empty or new folder."
            )
        if not overwrite:
            raise ConfigError(
                f"{key}='{folder}' already contains an output. Set {key.rsplit('.', 1)[0]}"
                ".overwrite=true to replace it, or choose another folder."
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
