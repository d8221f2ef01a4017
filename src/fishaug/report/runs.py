"""Find and read training run folders: config, overrides, status, metrics and class list.

A run folder is what ``python train.py`` writes for one job: ``.hydra/config.yaml`` (the config
with its interpolations), ``.hydra/hydra.yaml`` (the group choices), ``.hydra/overrides.yaml``,
``job_status.json``, ``metrics.json``, ``predictions_{val,test}.csv`` and the like. A multirun
sweep folder contains one run folder per job.
"""

from __future__ import annotations

import glob
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fishaug.errors import DataError

log = logging.getLogger(__name__)

CONFIG_FILE = Path(".hydra") / "config.yaml"
STATUS_FILE = "job_status.json"
METRICS_FILE = "metrics.json"
REUSED_FILE = "reused_from.txt"
SUBSETS = ("val", "test")
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class Run:
    """One training job as read from its folder.

    Attributes:
        path: the run folder.
        status: ``completed``, ``failed`` (the job raised, or it left no readable
            ``metrics.json``) or ``incomplete`` (no status file and no metrics: still running,
            or killed).
        reason: why a run is not completed; empty for completed runs.
        config: the flat config, ``{"aug.n": 2, "data.fold": 0, ...}``, with interpolations
            resolved where they can be resolved outside Hydra and left as text otherwise.
        interpolated: keys whose value is an interpolation such as ``${seed}``.
        overrides: the job's command-line overrides.
        choices: the config group choices, ``{"dataset": "fishcam", "aug": "randaugment", ...}``.
        metrics: the flat ``metrics.json``; empty unless completed.
        classes: the global class list, in the order of the model outputs.
    """

    path: Path
    status: str
    reason: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    interpolated: set[str] = field(default_factory=set)
    overrides: list[str] = field(default_factory=list)
    choices: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def aug(self) -> str:
        return str(self.config.get("aug.name", "unknown"))

    def predictions(self, subset: str) -> pd.DataFrame | None:
        """Read ``predictions_<subset>.csv``, or return None when the run did not write it."""
        path = self.path / f"predictions_{subset}.csv"
        return pd.read_csv(path) if path.is_file() else None


def find_run_folders(sources: Sequence[str | Path]) -> list[Path]:
    """Return the training run folders in ``sources``, each a run folder or a folder above runs.

    Shell-style patterns (``logs/train/multiruns/2026-*``) are expanded. Folders whose
    ``.hydra/config.yaml`` is not a training config (without top-level ``aug``, ``data`` and
    ``train`` keys, for example an eval or report run) are skipped.

    Raises:
        DataError: a source does not exist, or no run folder was found in any source.
    """
    if isinstance(sources, (str, Path)):
        sources = [sources]
    folders: list[Path] = []
    for source in sources:
        matches = sorted(glob.glob(str(source))) if glob.has_magic(str(source)) else [source]
        if not matches or not Path(matches[0]).exists():
            raise DataError(
                f"Run source {str(source)!r} does not exist; pass the folder of a run or of a "
                "multirun sweep, for example logs/train/multiruns/<date>_<time>."
            )
        for match in matches:
            folders.extend(_run_folders_below(Path(match)))

    unique = list(dict.fromkeys(folder.resolve() for folder in folders))
    if not unique:
        raise DataError(
            f"No training run folders found in {[str(s) for s in sources]}. A run folder "
            f"contains {CONFIG_FILE.as_posix()} with aug, data and train keys, as written by "
            "`python train.py`; pass the folder of a run or of a multirun sweep."
        )
    return unique


def _run_folders_below(root: Path) -> Iterable[Path]:
    candidates = [root] if (root / CONFIG_FILE).is_file() else []
    candidates += sorted(p.parent.parent for p in root.rglob(CONFIG_FILE.as_posix()))
    for folder in dict.fromkeys(candidates):
        # Only the top-level keys matter here; the C parser is much faster than OmegaConf.load.
        raw = yaml.load((folder / CONFIG_FILE).read_text(), Loader=_YAML_LOADER)
        if isinstance(raw, dict) and {"aug", "data", "train"} <= raw.keys():
            yield folder
        else:
            log.debug("Skipping %s: its config is not a training config.", folder)


def load_run(folder: Path) -> Run:
    """Read one run folder; a run that failed or left no metrics comes back with that status."""
    raw = OmegaConf.load(folder / CONFIG_FILE)
    config, interpolated = flatten_config(raw)
    overrides_path = folder / ".hydra" / "overrides.yaml"
    overrides = list(OmegaConf.load(overrides_path)) if overrides_path.is_file() else []
    run = Run(
        path=folder,
        status="completed",
        config=config,
        interpolated=interpolated,
        overrides=[str(o) for o in overrides],
        choices=_read_choices(folder),
    )

    status = _read_json(folder / STATUS_FILE)
    metrics_path = folder / METRICS_FILE
    if status is not None and status.get("status") == "failed":
        run.status, run.reason = "failed", str(status.get("error") or "the job raised an error")
    elif not metrics_path.is_file():
        if status is None:
            run.status = "incomplete"
            run.reason = f"no {STATUS_FILE} and no {METRICS_FILE}: still running, or killed"
        else:
            run.status, run.reason = "failed", f"{METRICS_FILE} is missing"
    else:
        metrics = _read_json(metrics_path)
        if metrics is None:
            run.status, run.reason = "failed", f"{METRICS_FILE} is not valid JSON"
        else:
            run.metrics = metrics

    run.classes = _class_list(run)
    return run


def load_runs(sources: Sequence[str | Path]) -> list[Run]:
    """Find and read every run folder in ``sources`` (see :func:`find_run_folders`).

    A run that reused the results of another run (``reused_from.txt``, written when
    ``skip_completed=true`` finds the same config finished) is left out when that other run
    is read too, so that one result does not count twice.
    """
    runs = [load_run(folder) for folder in find_run_folders(sources)]
    folders = {run.path.resolve() for run in runs}
    kept = []
    for run in runs:
        source = _reused_from(run.path)
        if source in folders:
            log.info("Skipping %s: it reused the results of %s.", run.path, source)
        else:
            kept.append(run)
    runs = kept
    counts = pd.Series([r.status for r in runs]).value_counts().to_dict()
    log.info("Read %d run folders: %s", len(runs), counts)
    return runs


def flatten_config(config: DictConfig) -> tuple[dict[str, Any], set[str]]:
    """Flatten a config to dotted keys and resolve what resolves without a running Hydra job.

    Lists stay whole values. Returns the flat config and the keys whose value is an
    interpolation; one that needs Hydra's runtime (``${hydra:runtime.output_dir}``) keeps its
    text.
    """
    flat: dict[str, Any] = {}
    interpolated: set[str] = set()

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict) and value:
                walk(value, f"{path}.")
            elif isinstance(value, str) and "${" in value:
                interpolated.add(path)
                flat[path] = _resolve(config, path, value)
            else:
                flat[path] = value

    walk(OmegaConf.to_container(config, resolve=False), "")
    return flat, interpolated


def _resolve(config: DictConfig, path: str, text: str) -> Any:
    try:
        value = OmegaConf.select(config, path, throw_on_resolution_failure=True)
    except OmegaConfBaseException:
        return text
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _reused_from(folder: Path) -> Path | None:
    path = folder / REUSED_FILE
    return Path(path.read_text().strip()).resolve() if path.is_file() else None


def _read_choices(folder: Path) -> dict[str, str]:
    path = folder / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return {}
    hydra_cfg = yaml.load(path.read_text(), Loader=_YAML_LOADER) or {}
    choices = hydra_cfg.get("hydra", {}).get("runtime", {}).get("choices") or {}
    return {str(k): str(v) for k, v in choices.items()}


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError:
        log.warning("%s is not valid JSON.", path)
        return None
    return value if isinstance(value, dict) else None


def _class_list(run: Run) -> list[str]:
    """Read the class list in model output order from a prediction file, else metrics.json."""
    for subset in SUBSETS:
        path = run.path / f"predictions_{subset}.csv"
        if path.is_file():
            columns = pd.read_csv(path, nrows=0).columns
            return [c[len("prob_") :] for c in columns if c.startswith("prob_")]
    for subset in SUBSETS:
        prefix = f"{subset}/support/"
        classes = [key[len(prefix) :] for key in run.metrics if key.startswith(prefix)]
        if classes:
            return classes
    return []
