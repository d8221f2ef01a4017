"""Build the comparison report of a set of run folders: CSV and Markdown tables, PNG figures
and one self-contained HTML page."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, ListConfig, OmegaConf

from fishaug.errors import ConfigError
from fishaug.report import plots, tables
from fishaug.report.grouping import assign_configurations, check_comparable
from fishaug.report.html import image_uri, render_html, table_context
from fishaug.report.label_issues import LabelIssues, find_label_issues
from fishaug.report.runs import Run, load_runs
from fishaug.report.statistics import paired_comparison

log = logging.getLogger(__name__)

SUBSETS = ("val", "test")
NORMALIZE = ("true", "pred", "all", "none")
DEFAULT_METRICS = ("acc", "precision_macro", "recall_macro", "specificity_macro", "f1_macro")
# Keys that set up a run without changing what is compared; they never tell configurations apart.
DEFAULT_IGNORE_KEYS = (
    "paths",
    "hydra",
    "logger",
    "callbacks",
    "tags",
    "task_name",
    "ckpt_path",
    "skip_completed",
    "resume",
    "train",
    "test",
    "optimized_metric",
    "trainer.enable_progress_bar",
    "trainer.default_root_dir",
    "trainer.log_every_n_steps",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.deterministic",
    "data.num_workers",
    "data.cache_dir",
    "data.check_images",
    "data.skip_bad_images",
    "data.eval_batch_size",
    "dataset.root",
    "dataset.path",
    "dataset.download",
    "dataset.url",
    "dataset.min_images",
)


@dataclass
class ReportOptions:
    """Options of a report: what it compares and how. ``configs/report.yaml`` documents them.

    ``sort_metric`` is added to ``metrics`` when it is not there.

    Raises:
        ConfigError: a value is out of range (checked when the options are built).
    """

    subset: str = "test"
    metrics: Sequence[str] = DEFAULT_METRICS
    sort_metric: str = "f1_macro"
    baseline: str = "none"
    group_by: Sequence[str] | None = None
    repeat_keys: Sequence[str] = ("data.fold", "seed")
    ignore_keys: Sequence[str] = DEFAULT_IGNORE_KEYS
    bootstrap_resamples: int = 10_000
    confidence: float = 0.95
    bootstrap_seed: int = 0
    confusion_normalize: str = "true"
    label_issues: bool = True
    label_issues_subset: str = "val"
    min_per_class: int = 5
    max_label_issues: int = 50
    thumbnails: int = 24
    force: bool = False
    title: str = "fishaug: comparing runs"

    def __post_init__(self) -> None:
        for name in ("subset", "label_issues_subset"):
            value = getattr(self, name)
            if value not in SUBSETS:
                raise ConfigError(f"{name}={value!r} is not valid; use one of {list(SUBSETS)}.")
        if self.confusion_normalize not in NORMALIZE:
            raise ConfigError(
                f"confusion_normalize={self.confusion_normalize!r} is not valid; use one of "
                f"{list(NORMALIZE)}."
            )
        if not 0.0 < self.confidence < 1.0:
            raise ConfigError(
                f"confidence={self.confidence} is not valid; use a value in (0, 1), e.g. 0.95."
            )
        if self.bootstrap_resamples < 100:
            raise ConfigError(
                f"bootstrap_resamples={self.bootstrap_resamples} is too few; use at least 100 "
                "(10000 is usual)."
            )
        if self.min_per_class < 2:
            raise ConfigError(f"min_per_class={self.min_per_class} is not valid; use 2 or more.")
        for name in ("max_label_issues", "thumbnails"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} is not valid; use 0 or more.")
        if not self.metrics:
            raise ConfigError("metrics is empty; list at least one metric, e.g. [f1_macro].")
        self.metrics = list(dict.fromkeys([*self.metrics, self.sort_metric]))
        self.repeat_keys = list(self.repeat_keys)
        self.ignore_keys = list(self.ignore_keys)
        self.group_by = list(self.group_by) if self.group_by is not None else None

    @property
    def metric_keys(self) -> list[str]:
        return [f"{self.subset}/{name}" for name in self.metrics]

    @property
    def sort_key(self) -> str:
        return f"{self.subset}/{self.sort_metric}"

    @classmethod
    def from_config(cls, cfg: DictConfig | dict[str, Any]) -> ReportOptions:
        """Build options from the fields of a config; other keys are ignored."""
        values = {}
        for option in dataclasses.fields(cls):
            if option.name in cfg:
                value = cfg[option.name]
                if isinstance(value, (DictConfig, ListConfig)):
                    value = OmegaConf.to_container(value, resolve=True)
                values[option.name] = value
        return cls(**values)


@dataclass
class ReportResult:
    """Files and tables of a built report: its folder, pages, tables (also as CSV), figures."""

    output_dir: Path
    html: Path
    markdown: Path
    tables: dict[str, pd.DataFrame]
    figures: list[plots.Figure]
    notes: list[str] = field(default_factory=list)
    label_issues: LabelIssues | None = None


def build_report(cfg: DictConfig) -> ReportResult:
    """Build the report that ``configs/report.yaml`` describes (``python report.py``).

    Raises:
        ConfigError: ``runs`` is not set, or an option is invalid.
        DataError: no run folders were found, or runs of different datasets are mixed.
    """
    sources = cfg.get("runs")
    if sources is None:
        sources = latest_sweep(Path(cfg.paths.log_dir) / "train" / "multiruns")
    sources = [sources] if isinstance(sources, str) else [str(s) for s in sources]
    output_dir = Path(cfg.output_dir)
    return build_report_from(sources, output_dir, ReportOptions.from_config(cfg))


def latest_sweep(folder: Path) -> str:
    """Return the most recently changed sweep folder below ``folder``."""
    sweeps = [p for p in folder.glob("*") if p.is_dir()] if folder.is_dir() else []
    if not sweeps:
        raise ConfigError(
            f"runs is not set and there is no sweep in {folder}; pass runs=<run or sweep "
            "folder>, or a list: runs='[logs/train/multiruns/a,logs/train/multiruns/b]'."
        )
    latest = max(sweeps, key=lambda p: p.stat().st_mtime)
    log.info("runs is not set; using the latest sweep, %s", latest)
    return str(latest)


def build_report_from(
    sources: Sequence[str | Path], output_dir: Path, options: ReportOptions | None = None
) -> ReportResult:
    """Compare the runs in ``sources`` and write the report into ``output_dir``.

    Raises:
        ConfigError: an option is invalid, or a metric is in no run's ``metrics.json``.
        DataError: no run folders were found, or the runs mix datasets or class lists
            (unless ``options.force``).
    """
    options = options or ReportOptions()
    runs = load_runs(sources)
    notes = check_comparable(runs, force=options.force)
    tables.check_metrics(options.metrics, options.subset, runs)

    configurations, keys = assign_configurations(
        runs, options.baseline, options.group_by, options.repeat_keys, options.ignore_keys
    )
    table = tables.run_table(runs, configurations, options.metric_keys)
    notes += _check_notes(runs, table, options)

    summary = tables.summary_table(table, options.metric_keys, options.sort_key)
    comparison = paired_comparison(
        table,
        options.sort_key,
        options.bootstrap_resamples,
        options.confidence,
        options.bootstrap_seed,
    )
    per_class = tables.per_class_table(runs, table, options.subset)
    per_class_diff = tables.per_class_difference(per_class, summary) if len(summary) else per_class
    gaps = tables.gap_table(table)
    timing_jobs, timing_techniques = tables.timing_tables(table)
    failed = tables.failed_table(table)

    output_dir.mkdir(parents=True, exist_ok=True)
    figures = _write_figures(
        runs, table, summary, keys, per_class_diff, gaps, timing_techniques, options, output_dir
    )

    label_issues = None
    if options.label_issues:
        label_issues = find_label_issues(
            runs,
            options.label_issues_subset,
            options.min_per_class,
            options.max_label_issues,
            options.thumbnails,
        )

    result_tables = {
        "runs": table,
        "summary": summary,
        "comparison": comparison,
        "per_class_f1": per_class.reset_index() if len(per_class) else per_class,
        "per_class_f1_diff": per_class_diff.reset_index()
        if len(per_class_diff)
        else per_class_diff,
        "gap": gaps,
        "timing_jobs": timing_jobs,
        "timing_techniques": timing_techniques,
        "failed": failed,
    }
    if label_issues is not None:
        result_tables["label_issues"] = label_issues.table.drop(
            columns="thumbnail", errors="ignore"
        )
    for name, frame in result_tables.items():
        frame.to_csv(output_dir / f"{name}.csv", index=False, float_format="%.6g")

    result = ReportResult(
        output_dir=output_dir,
        html=output_dir / "report.html",
        markdown=output_dir / "summary.md",
        tables=result_tables,
        figures=figures,
        notes=notes,
        label_issues=label_issues,
    )
    sources_text = [str(s) for s in sources]
    result.markdown.write_text(_markdown(result, options, sources_text))
    result.html.write_text(_html(result, options, sources_text))
    for note in notes:
        log.warning("%s", note)
    log.info(
        "Report of %d runs in %d configurations: %s (tables and figures in %s)",
        len(runs),
        len(summary),
        result.html,
        output_dir,
    )
    return result


def _check_notes(runs: Sequence[Run], table: pd.DataFrame, options: ReportOptions) -> list[str]:
    """Warnings about the comparison itself: failures, missing baselines, differing test sets."""
    notes = []
    not_done = table[table["status"] != "completed"]
    if len(not_done):
        notes.append(
            f"{len(not_done)} of {len(table)} jobs failed or did not finish; they are listed "
            "under 'Failed or incomplete jobs' and left out of the means."
        )
    done = table[table["status"] == "completed"]
    if len(done) and not done["is_baseline"].any():
        notes.append(
            f"No completed baseline run (aug={options.baseline}); run one, for example "
            f"`python train.py -m aug={options.baseline} data.fold=0,1,2,3`, to get differences."
        )
    test_sets = set()
    for run, status in zip(runs, table["status"], strict=True):
        split = run.path / "split.csv"
        if status == "completed" and split.is_file():
            frame = pd.read_csv(split, usecols=["video", "subset"])
            test_sets.add(frozenset(frame.loc[frame["subset"] == "test", "video"]))
    if len(test_sets) > 1:
        notes.append(
            f"The runs were tested on {len(test_sets)} different sets of test videos (different "
            "data.test_videos, data.test_per_class or data.split_seed); test metrics of "
            "different test sets are not directly comparable."
        )
    return notes


def _write_figures(
    runs: Sequence[Run],
    table: pd.DataFrame,
    summary: pd.DataFrame,
    keys: Sequence[str],
    per_class_diff: pd.DataFrame,
    gaps: pd.DataFrame,
    timing_techniques: pd.DataFrame,
    options: ReportOptions,
    folder: Path,
) -> list[plots.Figure]:
    figures: list[plots.Figure] = []
    if summary.empty:
        return figures
    metric = options.sort_key
    figures.append(
        plots.Figure(
            "overview",
            f"{metric} per configuration",
            plots.plot_metric_bars(summary, metric, folder / "metric_per_configuration.png"),
        )
    )
    figures += plots.plot_heatmaps(table, summary, keys, metric, folder)
    if len(per_class_diff):
        path = plots.plot_per_class_difference(
            per_class_diff, "F1", folder / "per_class_f1_diff.png"
        )
        figures.append(plots.Figure("per_class", "per-class F1: difference to the baseline", path))
    classes = next((run.classes for run in runs if run.completed and run.classes), [])
    figures += plots.write_confusions(
        runs, table, classes, options.subset, options.confusion_normalize, folder
    )
    if len(gaps):
        path = plots.plot_gap(gaps, table, folder / "val_vs_test.png")
        figures.append(plots.Figure("gap", "val against test macro F1 per run", path))
    if len(timing_techniques):
        path = plots.plot_timing(timing_techniques, folder / "time_per_technique.png")
        figures.append(plots.Figure("timing", "run time per technique", path))
    return figures


def display_summary(summary: pd.DataFrame, options: ReportOptions) -> pd.DataFrame:
    """Format the summary for Markdown and HTML: ``mean ± std`` cells, signed differences."""
    if summary.empty:
        return summary
    shown = summary[["configuration", "runs", "failed"]].copy()
    for key in options.metric_keys:
        shown[key] = [
            f"{mean:.4f}" + ("" if pd.isna(std) else f" ± {std:.4f}")
            for mean, std in zip(summary[f"{key} mean"], summary[f"{key} std"], strict=True)
        ]
    differences = []
    for is_baseline, diff in zip(
        summary["is_baseline"], summary[f"{options.sort_key} diff"], strict=True
    ):
        if is_baseline:
            differences.append("baseline")
        else:
            differences.append("" if pd.isna(diff) else f"{diff:+.4f}")
    shown[f"{options.sort_key} diff"] = differences
    return shown


def _markdown(result: ReportResult, options: ReportOptions, sources: list[str]) -> str:
    t = result.tables
    lines = [
        f"# {options.title}",
        "",
        f"Runs from {', '.join(sources)}; metrics on the {options.subset} subset, sorted by "
        f"{options.sort_key}.",
        "",
    ]
    lines += [f"> {note}\n" for note in result.notes]

    summary = display_summary(t["summary"], options)
    lines += ["## Failed or incomplete jobs", "", tables.markdown_table(t["failed"])]
    lines += ["## Configurations", "", tables.markdown_table(summary)]
    lines += [
        "## Paired comparison with the baseline",
        "",
        f"Pairs share fold and seed; {options.confidence:.0%} percentile bootstrap interval of "
        f"the mean difference in {options.sort_key}.",
        "",
        tables.markdown_table(t["comparison"]),
    ]

    timing = tables.markdown_table(t["timing_techniques"], "{:.1f}")
    lines += ["## Per-class F1", "", tables.markdown_table(t["per_class_f1"])]
    lines += ["## Validation against test", "", tables.markdown_table(t["gap"])]
    lines += ["## Run time per technique", "", timing]

    if result.label_issues is not None:
        lines += ["## Likely label errors", ""]
        lines += [f"> {message}\n" for message in result.label_issues.messages]
        shown = t["label_issues"].drop(columns=["runs"], errors="ignore")
        lines += [tables.markdown_table(shown)]

    lines += ["## Figures", ""]
    lines += [f"![{f.title}]({f.path.name})" for f in result.figures]
    return "\n".join(lines) + "\n"


def _html(result: ReportResult, options: ReportOptions, sources: list[str]) -> str:
    t = result.tables
    summary = t["summary"]
    status = t["runs"]["status"].value_counts()
    figures: dict[str, list[dict[str, str]]] = {
        s: [] for s in ("overview", "heatmap", "per_class", "confusion", "gap", "timing")
    }
    for figure in result.figures:
        figures[figure.section].append({"title": figure.title, "uri": image_uri(figure.path)})

    label_context: dict[str, Any] = {
        "subset": options.label_issues_subset,
        "images": 0,
        "messages": [],
        "rows": [],
        "columns": [],
    }
    if result.label_issues is not None:
        issues = result.label_issues
        label_context.update(
            images=issues.images,
            messages=issues.messages,
            columns=["rank", "image", "label", "suggested", "label quality", "video", "path"],
            rows=[
                {**row, "label_quality": f"{row['label_quality']:.3f}"}
                for row in issues.table.to_dict("records")
            ],
        )
    else:
        label_context["messages"] = ["Label-error analysis is off (label_issues=false)."]

    runs_shown = t["runs"].drop(columns=["reason"])
    context = {
        "title": options.title,
        "generated": datetime.now().strftime("%Y-%m-%d %H:%M"),
        "sources": sources,
        "counts": {
            "completed": int(status.get("completed", 0)),
            "failed": int(status.get("failed", 0)),
            "incomplete": int(status.get("incomplete", 0)),
            "configurations": len(summary),
        },
        "subset": options.subset,
        "metric": options.sort_key,
        "baseline": options.baseline,
        "confidence_percent": f"{options.confidence * 100:g}",
        "resamples": options.bootstrap_resamples,
        "notes": result.notes,
        "failed": table_context(t["failed"]),
        "summary": table_context(
            display_summary(summary, options),
            ["baseline" if b else "" for b in summary.get("is_baseline", [])],
        ),
        "comparison": table_context(t["comparison"]),
        "per_class": table_context(t["per_class_f1"], digits=3),
        "gap": table_context(t["gap"]),
        "timing_techniques": table_context(t["timing_techniques"], digits=1),
        "timing_jobs": table_context(t["timing_jobs"], digits=1),
        "runs": table_context(
            runs_shown, ["" if s == "completed" else "failed" for s in runs_shown["status"]]
        ),
        "figures": figures,
        "label_issues": label_context,
    }
    return render_html(context)
