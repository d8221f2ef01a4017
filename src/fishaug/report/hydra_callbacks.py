"""Hydra callbacks: a summary report at the end of every multirun, and one W&B run per job."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from fishaug.errors import DataError
from fishaug.report.wandb_run import (
    SWEEP_FILE,
    finish_open_run,
    read_sweep_file,
    write_sweep_file,
)
from fishaug.utils.hydra_callbacks import STATUS_FILE

log = logging.getLogger(__name__)


class SweepSummaryCallback(Callback):
    """Build the comparison report of a multirun in ``<sweep dir>/<output_subdir>/``.

    Hydra's basic sweeper raises the first job failure after the last job has run and then
    skips ``on_multirun_end``. So the report is built at the end of the last job, once every
    job of the sweep has its ``job_status.json``, and failed jobs are listed in it. Sweepers
    whose number of jobs is not known in advance get the report in ``on_multirun_end``.

    ``on_job_end`` runs in reverse order of the callback list, so this callback must be listed
    before ``JobStatusCallback`` for the last job's status file to exist when it runs.

    Args:
        enabled: False turns the report off.
        output_subdir: folder below the sweep folder for the report files.
        options: fields of :class:`fishaug.report.build.ReportOptions`, for example
            ``label_issues=false``.
    """

    def __init__(self, enabled: bool = True, output_subdir: str = "report", **options: Any):
        self.enabled = enabled
        self.output_subdir = output_subdir
        self.options = options

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        overrides = [str(o) for o in config.hydra.overrides.task]
        params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
        params = {str(k): str(v) for k, v in params.items()}
        jobs = expected_jobs(config, overrides, params)
        write_sweep_file(sweep_dir, swept_keys(overrides, params), overrides, jobs)
        log.info(
            "Multirun of %s jobs; swept keys recorded in %s",
            jobs or "an unknown number of",
            sweep_dir / SWEEP_FILE,
        )

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        hydra_cfg = job_return.hydra_cfg.hydra if job_return.hydra_cfg is not None else None
        if not self.enabled or hydra_cfg is None or not str(hydra_cfg.mode).endswith("MULTIRUN"):
            return
        # From `config`: job_return.hydra_cfg is a copy without the rest of the config, in which
        # a sweep folder built from ${paths.log_dir} does not resolve.
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = read_sweep_file(sweep_dir).get("jobs")
        if jobs is None:
            return
        # Status files older than this multirun come from an earlier sweep into the same folder.
        started = (sweep_dir / SWEEP_FILE).stat().st_mtime
        statuses = sweep_dir.glob(f"*/{STATUS_FILE}")
        done = sum(1 for path in statuses if path.stat().st_mtime >= started)
        if done >= jobs:
            self._build(sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if self.enabled and not self._is_current(sweep_dir):
            self._build(sweep_dir)

    def _is_current(self, sweep_dir: Path) -> bool:
        """Return True when the report is newer than every job's status file."""
        page = sweep_dir / self.output_subdir / "report.html"
        statuses = [p.stat().st_mtime for p in sweep_dir.glob(f"*/{STATUS_FILE}")]
        return page.is_file() and page.stat().st_mtime >= max(statuses, default=0.0)

    def _build(self, sweep_dir: Path) -> None:
        from fishaug.report.build import ReportOptions, build_report_from
        from fishaug.report.runs import find_run_folders

        try:
            find_run_folders([sweep_dir])
        except DataError:
            # The sweeps of search.py and synth.py share this Hydra config but train nothing.
            log.info("No training runs in %s, so no sweep report.", sweep_dir)
            return
        try:
            options = ReportOptions(**self.options)
            result = build_report_from([sweep_dir], sweep_dir / self.output_subdir, options)
        except Exception:
            # A failed report must not fail the sweep: the jobs' results are already on disk,
            # and report.py builds the report again from them.
            log.exception(
                "The sweep report for %s failed; rebuild it with `python report.py runs=%s`.",
                sweep_dir,
                sweep_dir,
            )
            return
        log.info("Sweep report: %s", result.html)


class WandbFinishCallback(Callback):
    """Finish the W&B run of each job, marking it failed when the job raised.

    A job that succeeds finishes its run itself after logging its results. This callback
    covers jobs that raised, because their open run would be reused by the next job of the
    multirun.
    """

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        finish_open_run(failed=job_return.status == JobStatus.FAILED)


def swept_keys(overrides: list[str], sweeper_params: dict[str, str]) -> list[str]:
    """Return the keys that take several values in a sweep, in command-line order.

    ``overrides`` are the multirun's command-line overrides (``aug.n=1,2``) and
    ``sweeper_params`` is ``hydra.sweeper.params`` (``{"aug.n": "1,2"}``). A parameter that a
    sweeper defines with its own syntax, which Hydra's parser rejects, counts as swept.
    """
    parser = OverridesParser.create()
    keys = []
    for key, value in sweeper_params.items():
        try:
            (override,) = parser.parse_overrides([f"{key}={value}"])
        except HydraException:
            keys.append(key)
            continue
        if override.is_sweep_override():
            keys.append(key)
    for override in parser.parse_overrides([str(o) for o in overrides]):
        key = override.get_key_element().lstrip("+~")
        if override.is_sweep_override():
            keys.append(key)
        elif key in keys:
            # A single value on the command line replaces the sweeper's values for that key.
            keys.remove(key)
    return list(dict.fromkeys(keys))


BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def expected_jobs(config: DictConfig, overrides: list[str], params: dict[str, str]) -> int | None:
    """Return the number of jobs of a multirun, or None when the sweeper decides as it goes.

    The basic sweeper runs the Cartesian product of the swept values; a sweeper with
    ``n_trials`` (Optuna) runs that many jobs.
    """
    target = OmegaConf.select(config, "hydra.sweeper._target_", default=None)
    if target == BASIC_SWEEPER:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        parsed = OverridesParser.create().parse_overrides(
            [f"{k}={v}" for k, v in params.items()] + overrides
        )
        return sum(len(batch) for batch in BasicSweeper.split_arguments(parsed, None))
    trials = OmegaConf.select(config, "hydra.sweeper.n_trials", default=None)
    return int(trials) if trials is not None else None
