"""Hydra callbacks that keep a record of every job of a multirun, failed ones included."""

from __future__ import annotations

import json
import logging
import os
import traceback
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

STATUS_FILE = "job_status.json"
SWEEP_TABLE = "jobs.csv"


class JobStatusCallback(Callback):
    """Write ``job_status.json`` into each job folder and keep ``jobs.csv`` in the sweep folder.

    A failed job does not stop the other jobs of a Hydra multirun; Hydra raises its error only
    after the last job. This callback makes each failure visible at once in the log and lists
    every job, with its overrides, status and error, in ``<sweep dir>/jobs.csv``.
    """

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        hydra_cfg = job_return.hydra_cfg.hydra
        output_dir = Path(hydra_cfg.runtime.output_dir)
        failed = job_return.status == JobStatus.FAILED
        error = job_return._return_value if failed else None
        record = {
            "job": hydra_cfg.job.get("num", 0),
            "overrides": " ".join(job_return.overrides or []),
            "status": "failed" if failed else "completed",
            "error": f"{type(error).__name__}: {error}" if error is not None else "",
            "output_dir": str(output_dir),
        }
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / STATUS_FILE).write_text(json.dumps(record, indent=2))
        if failed:
            trace = "".join(traceback.format_exception(error))
            (output_dir / "error.txt").write_text(trace)
            log.error(
                "Job %s (%s) failed: %s. Traceback in %s",
                record["job"],
                record["overrides"],
                record["error"],
                output_dir / "error.txt",
            )
        if hydra_cfg.mode is not None and str(hydra_cfg.mode).endswith("MULTIRUN"):
            # From `config`: job_return.hydra_cfg is a copy without the rest of the config, in
            # which a sweep folder built from ${paths.log_dir} does not resolve.
            write_sweep_table(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        table = write_sweep_table(Path(config.hydra.sweep.dir))
        if table is not None:
            counts = table["status"].value_counts().to_dict()
            log.info(
                "Multirun finished: %s. Job list in %s",
                counts,
                Path(config.hydra.sweep.dir) / SWEEP_TABLE,
            )


def write_sweep_table(sweep_dir: Path) -> pd.DataFrame | None:
    """Gather the job status files below ``sweep_dir`` into ``jobs.csv``; return the table."""
    records = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob(f"*/{STATUS_FILE}"))]
    if not records:
        return None
    table = pd.DataFrame(records).sort_values("job")
    temporary = sweep_dir / f".{SWEEP_TABLE}.{os.getpid()}"
    table.to_csv(temporary, index=False)
    temporary.replace(sweep_dir / SWEEP_TABLE)
    return table
