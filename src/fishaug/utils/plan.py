"""Plan experiment sweeps before launching them: list every job, check it, estimate its cost.

``python plan.py experiment=baseline,randaugment`` plans one multirun per experiment, as
``python train.py -m experiment=<name>`` would run it. Each sweep is expanded the way Hydra's
basic sweeper expands it (``hydra.sweeper.params``, then the sweeps of the command line, key by
key), every job's config is composed, and each job is

- checked: every ``aug`` key must be a parameter of the chosen augmentation (an error), and the
  augmentation is built, so that a missing policy file or synthetic set shows up (a warning);
- matched with earlier runs: a job whose config key (see :mod:`fishaug.utils.resume`) finished
  under ``paths.log_dir`` is skipped by ``skip_completed``, an interrupted one is resumed;
- costed: epochs times the seconds per epoch of :mod:`fishaug.utils.cost`.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf, open_dict

from fishaug.augment import AUGMENTATIONS, build_augmentation
from fishaug.errors import ConfigError, DataError
from fishaug.utils.cost import EpochTimes, measured_epoch_times, run_shape
from fishaug.utils.resume import KEY_FILE, config_key

log = logging.getLogger(__name__)

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
# Run-level values that train() hands to every augmentation builder besides its aug keys.
BUILD_CONTEXT = ("seed",)


@dataclass
class Job:
    """One job of a planned sweep.

    ``status`` is ``new``, ``done`` (a finished run with the same config key exists, so the job
    reuses its results) or ``resumable`` (an interrupted run left ``checkpoints/last.ckpt``).
    ``fit_s`` is the estimated training time in seconds: 0 for a done job, and all epochs for
    the others, because the epoch a resumable run stopped at is not known here. ``aug_error``
    is empty, or the error that building the job's augmentation raised.
    """

    experiment: str
    number: int
    overrides: str
    model: str
    split: str
    aug: str
    epochs: int
    status: str
    epoch_s: float
    estimate_from: str
    fit_s: float
    aug_error: str
    key: str


class Planner:
    """Expand, compose and check the jobs of sweeps over ``config_name`` in ``config_dir``.

    Composing hundreds of jobs one by one takes minutes, so a config is composed once per
    distinct set of config-group choices (``experiment``, ``model``, ``aug`` ...), and each
    job's value overrides are applied to a copy with Hydra's own override code.
    """

    def __init__(self, config_dir: str | Path, config_name: str = "train"):
        self.config_dir = str(Path(config_dir).resolve())
        self.config_name = config_name
        self.parser = OverridesParser.create()
        # Per set of group choices: the config with its hydra node, and the job config without.
        self._composed: dict[tuple[str, ...], tuple[DictConfig, DictConfig]] = {}
        self._run_keys: dict[Path, dict[str, str]] = {}
        self._epoch_times: dict[Path, EpochTimes] = {}
        self._built: dict[str, str] = {}

    def sweep(self, overrides: Sequence[str]) -> list[list[str]]:
        """Return the overrides of each job of ``python train.py -m <overrides>``, in order.

        Raises:
            ConfigError: the config's sweeper is not Hydra's basic (grid) sweeper.
        """
        parsed = self.parser.parse_overrides(list(overrides))
        fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
        self.compose(fixed)
        sweeper = HydraConfig.get().sweeper
        if sweeper.get("_target_") != BASIC_SWEEPER:
            raise ConfigError(
                f"hydra.sweeper is {sweeper.get('_target_')}; the plan lists grid sweeps of "
                "Hydra's basic sweeper only. An Optuna search runs hydra.sweeper.n_trials jobs."
            )
        params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
        # The command line comes after the sweeper's params, so a key given on both wins there.
        arguments = self.parser.parse_overrides(params + list(overrides))
        batches = BasicSweeper.split_arguments(arguments, max_batch_size=None)
        return [list(job) for batch in batches for job in batch]

    def compose(self, overrides: Sequence[str]) -> DictConfig:
        """Compose a job's config as Hydra hands it to ``train()``, without the ``hydra`` node.

        The job's Hydra config is made current (``HydraConfig``) with a placeholder output
        folder, so that ``${hydra:...}`` interpolations resolve. Overrides of ``hydra.*`` keys
        are left out: they set up the launch and do not change what a job computes.

        Raises:
            ConfigError: an override names a key that is not in the config; the message lists
                the keys of the node the key belongs to.
        """
        parsed = self.parser.parse_overrides(list(overrides))
        groups, values = self._split_group_overrides(parsed)
        cache_key = tuple(o.input_line for o in groups)
        if cache_key not in self._composed:
            self._composed[cache_key] = self._compose_groups(list(cache_key))
        hydra_cfg, task_cfg = self._composed[cache_key]
        HydraConfig.instance().set_config(hydra_cfg)
        cfg = copy.deepcopy(task_cfg)
        values = [o for o in values if not o.key_or_group.startswith("hydra.")]
        try:
            # NOTE: a private function of hydra-core 1.3, the one that applies command-line
            # values after composition, so that a job's config is the one Hydra would build.
            ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        except ConfigCompositionException as error:
            raise ConfigError(unknown_key_message(error, cfg)) from error
        return cfg

    def jobs(self, experiment: str | None, overrides: Sequence[str]) -> list[Job]:
        """Plan the multirun of ``experiment`` (None: no experiment config) with ``overrides``.

        Raises:
            ConfigError: a job's config does not compose, or it sets an ``aug`` key that its
                augmentation does not have; the message names the experiment and the keys.
        """
        where = f"experiment={experiment}" if experiment else "the sweep"
        arguments = ([f"experiment={experiment}"] if experiment else []) + list(overrides)
        try:
            sweep = self.sweep(arguments)
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from error

        planned = []
        for number, job_overrides in enumerate(sweep):
            try:
                cfg = self.compose(job_overrides)
                check_aug_keys(cfg)
            except ConfigError as error:
                raise ConfigError(
                    f"{where}, job {number} ({' '.join(job_overrides)}): {error}"
                ) from error
            planned.append(self._plan_job(experiment or "", number, job_overrides, cfg))
        return planned

    def _plan_job(
        self, experiment: str, number: int, overrides: list[str], task_cfg: DictConfig
    ) -> Job:
        key = config_key(task_cfg)
        log_dir = Path(task_cfg.paths.log_dir)
        status = self._run_keys_below(log_dir).get(key, "new")
        epoch_s, source = self._epoch_times_below(log_dir).estimate(run_shape(task_cfg))
        epochs = int(task_cfg.trainer.max_epochs)
        split = f"{task_cfg.data.scheme}-{task_cfg.data.fold}"
        return Job(
            experiment=experiment,
            number=number,
            overrides=" ".join(overrides),
            model=str(task_cfg.model.arch),
            split=split,
            aug=str(task_cfg.aug.name),
            epochs=epochs,
            status=status,
            epoch_s=epoch_s,
            estimate_from=source,
            fit_s=0.0 if status == "done" else epochs * epoch_s,
            aug_error=self._build_error(task_cfg),
            key=key,
        )

    def _split_group_overrides(
        self, overrides: list[Override]
    ) -> tuple[list[Override], list[Override]]:
        # Hydra's rule: an override of a config group's name picks an option, unless its value
        # is a dict, which is merged into the group's node (data={scheme:...,fold:1}).
        repository = self._repository()
        groups, values = [], []
        for override in overrides:
            is_group = repository.group_exists(override.key_or_group)
            if is_group and not isinstance(override.value(), dict):
                groups.append(override)
            else:
                values.append(override)
        return groups, values

    def _repository(self) -> Any:
        self._initialize()
        return GlobalHydra.instance().config_loader().repository

    def _initialize(self) -> None:
        hydra = GlobalHydra.instance()
        if hydra.is_initialized():
            paths = [source.path for source in hydra.config_loader().get_sources()]
            if self.config_dir in paths:
                return
            hydra.clear()
        initialize_config_dir(config_dir=self.config_dir, version_base="1.3")

    def _compose_groups(self, overrides: list[str]) -> tuple[DictConfig, DictConfig]:
        self._initialize()
        try:
            cfg = compose(self.config_name, overrides=overrides, return_hydra_config=True)
        except ConfigCompositionException as error:
            raise ConfigError(str(error)) from error
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(Path(cfg.hydra.runtime.cwd) / "<planned job>")
        task_cfg = copy.deepcopy(cfg)
        with open_dict(task_cfg):
            del task_cfg["hydra"]
        return cfg, task_cfg

    def _run_keys_below(self, log_dir: Path) -> dict[str, str]:
        if log_dir not in self._run_keys:
            self._run_keys[log_dir] = index_run_keys(log_dir)
        return self._run_keys[log_dir]

    def _epoch_times_below(self, log_dir: Path) -> EpochTimes:
        if log_dir not in self._epoch_times:
            self._epoch_times[log_dir] = EpochTimes(measured_epoch_times(log_dir))
        return self._epoch_times[log_dir]

    def _build_error(self, cfg: DictConfig) -> str:
        params = OmegaConf.to_container(cfg.aug, resolve=True)
        cache_key = json.dumps([params, cfg.seed], sort_keys=True, default=str)
        if cache_key not in self._built:
            try:
                build_augmentation(params, seed=cfg.seed)
                self._built[cache_key] = ""
            except (ConfigError, DataError) as error:
                self._built[cache_key] = str(error)
        return self._built[cache_key]


def check_aug_keys(cfg: DictConfig) -> None:
    """Raise a ConfigError unless every key of ``cfg.aug`` is a parameter of its augmentation.

    Only the names are checked, not the values, so that a job whose policy file or synthetic
    set a later step makes still plans.
    """
    keys = list(cfg.aug.keys())
    name = cfg.aug.get("name")
    if name not in AUGMENTATIONS:
        raise ConfigError(f"aug.name={name!r} is not valid; use one of {sorted(AUGMENTATIONS)}.")
    accepted = aug_parameters(str(name))
    unknown = sorted(set(keys) - {"name"} - set(accepted))
    if unknown:
        raise ConfigError(
            f"aug={name} has no parameter(s) {unknown}; its parameters are {accepted}. Remove "
            "the key from hydra.sweeper.params or the command line, or choose the aug option "
            "that has it."
        )


def aug_parameters(name: str) -> list[str]:
    """Return the ``aug`` keys that the augmentation ``name`` takes, besides ``name``."""
    # NOTE: the same rule as fishaug.augment.registry.build_augmentation, which accepts the
    # builder's arguments except the run-level ones that train() passes.
    signature = inspect.signature(AUGMENTATIONS[name])
    return [p for p in signature.parameters if p not in BUILD_CONTEXT]


def unknown_key_message(error: ConfigCompositionException, cfg: DictConfig) -> str:
    """Rephrase Hydra's "Could not override 'aug.foo'" with the keys that the node does have."""
    match = re.search(r"override '([^']+)'", str(error))
    if match is None:
        return str(error)
    key = match.group(1)
    parent_key, _, last = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if not isinstance(parent, DictConfig):
        return str(error)
    choice = HydraConfig.get().runtime.choices.get(parent_key)
    node = f"{parent_key}={choice}" if choice else parent_key or "the config"
    return (
        f"{key} is not a key of {node}; its keys are {sorted(parent.keys())}. Sweep one of "
        f"those, or choose the option that has '{last}'."
    )


def index_run_keys(log_dir: Path) -> dict[str, str]:
    """Map the config key of every run folder below ``log_dir`` to ``done`` or ``resumable``.

    The rule of :func:`fishaug.utils.resume.find_previous`: a folder with ``metrics.json`` is
    finished, one with ``checkpoints/last.ckpt`` and no metrics can be resumed.
    """
    found: dict[str, str] = {}
    key_files = log_dir.rglob(KEY_FILE) if log_dir.is_dir() else []
    for key_file in key_files:
        try:
            key = json.loads(key_file.read_text()).get("key")
        except (json.JSONDecodeError, OSError):
            continue
        folder = key_file.parent
        if (folder / "metrics.json").is_file():
            found[key] = "done"
        elif (folder / "checkpoints" / "last.ckpt").is_file() and found.get(key) != "done":
            found[key] = "resumable"
    return found


def split_experiments(overrides: Sequence[str]) -> tuple[list[str | None], list[str]]:
    """Take ``experiment=a,b`` out of ``overrides``: each experiment is a multirun of its own."""
    parser = OverridesParser.create()
    experiments: list[str | None] = [None]
    rest = []
    for override in parser.parse_overrides(list(overrides)):
        if override.key_or_group == "experiment" and not override.is_delete():
            values = override.sweep_iterator() if override.is_sweep_override() else None
            experiments = [str(v) for v in values] if values else [str(override.value())]
        else:
            rest.append(override.input_line)
    return experiments, rest


def plan_sweeps(overrides: Sequence[str], config_dir: str | Path) -> pd.DataFrame:
    """Plan ``python train.py -m <overrides>``, one multirun per value of ``experiment=``.

    Returns one row per job with the fields of :class:`Job`.

    Raises:
        ConfigError: a job does not compose, or sweeps an ``aug`` key its augmentation lacks.
    """
    experiments, rest = split_experiments(overrides)
    planner = Planner(config_dir)
    jobs = [job for experiment in experiments for job in planner.jobs(experiment, rest)]
    return pd.DataFrame([asdict(job) for job in jobs], columns=list(Job.__dataclass_fields__))


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Count jobs per experiment by status and add their epochs and estimated hours."""
    grouped = table.groupby("experiment", sort=False)
    summary = pd.DataFrame(
        {
            "jobs": grouped.size(),
            "done": grouped["status"].apply(lambda s: int((s == "done").sum())),
            "resumable": grouped["status"].apply(lambda s: int((s == "resumable").sum())),
            "to_run": grouped["status"].apply(lambda s: int((s != "done").sum())),
            "epochs": grouped.apply(
                lambda g: int(g.loc[g["status"] != "done", "epochs"].sum()), include_groups=False
            ),
            "hours": grouped["fit_s"].sum() / 3600,
            "aug_errors": grouped["aug_error"].apply(lambda s: int((s != "").sum())),
        }
    )
    summary.loc["total"] = summary.sum()
    return summary.rename_axis("experiment")


def log_plan(table: pd.DataFrame) -> None:
    """Log the plan: the summary table, where the epoch times come from, and aug errors."""
    summary = summarize(table)
    log.info(
        "Planned %d jobs, %d already done; estimated training time %.2f h.\n%s",
        len(table),
        int((table["status"] == "done").sum()),
        table["fit_s"].sum() / 3600,
        summary.to_string(float_format=lambda v: f"{v:.2f}"),
    )
    for (arch, source), group in table.groupby(["model", "estimate_from"]):
        log.info(
            "%s: %.1f s per epoch, %s (%d jobs)",
            arch,
            group["epoch_s"].median(),
            source,
            len(group),
        )
    for experiment, group in table[table["aug_error"] != ""].groupby("experiment", sort=False):
        log.warning(
            "%s: %d jobs cannot build their augmentation yet, e.g. job %d: %s",
            experiment or "sweep",
            len(group),
            group["number"].iloc[0],
            group["aug_error"].iloc[0],
        )


def check_splits(overrides: Sequence[str], config_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Load the data set and build every split that the jobs of ``overrides`` use.

    ``overrides`` are those of :func:`plan_sweeps`. Returns, per data set and split
    (``<dataset>:<split>``), the images and videos per subset, so that a split that cannot be
    built (too few videos of a class for the folds, unreadable images) fails here, before any
    policy search or training.

    Raises:
        DataError: the data set or a split cannot be built; the message names the cause.
    """
    from fishaug.training import build_datamodule

    experiments, rest = split_experiments(overrides)
    planner = Planner(config_dir)
    summaries: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for experiment in experiments:
        arguments = ([f"experiment={experiment}"] if experiment else []) + rest
        for job_overrides in planner.sweep(arguments):
            cfg = planner.compose(job_overrides)
            identity = json.dumps(
                [OmegaConf.to_container(cfg[key], resolve=True) for key in ("dataset", "data")],
                sort_keys=True,
            )
            if identity in seen:
                continue
            seen.add(identity)

            datamodule = build_datamodule(cfg)
            datamodule.setup("fit")
            split = datamodule.split
            dataset = HydraConfig.get().runtime.choices.dataset
            name = f"{dataset}:{cfg.data.scheme}-{cfg.data.fold}"
            summaries[name] = {
                subset: {
                    "images": int((split["subset"] == subset).sum()),
                    "videos": int(split.loc[split["subset"] == subset, "video"].nunique()),
                }
                for subset in ("train", "val", "test")
            }
            log.info("Split %s: %s", name, summaries[name])
    return summaries
