"""The comparison report on run folders written here: tables, statistics, figures, label errors.

The run folders follow the contract of ``fishaug.training.train`` (``.hydra/``, ``metrics.json``,
``predictions_{val,test}.csv``, ``split.csv``, ``job_status.json``) with predictions drawn at a
chosen accuracy, so the expected ranking is known without training.
"""

from __future__ import annotations

import json
import zlib
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf, open_dict
from PIL import Image

from fishaug.errors import ConfigError, DataError
from fishaug.evaluation.metrics import classification_metrics
from fishaug.report.build import ReportOptions, build_report, build_report_from
from fishaug.report.grouping import assign_configurations
from fishaug.report.label_issues import find_label_issues
from fishaug.report.runs import load_runs
from fishaug.report.statistics import bootstrap_mean_interval, paired_comparison

CLASSES = ["bream", "chub", "perch"]
VIDEOS_PER_CLASS = {"test": 2, "fold0": 2, "fold1": 2}
IMAGES_PER_VIDEO = 4
# Validation images whose given label is wrong: every fold model predicts another class.
FLIPPED = {"perch_fold0_v0_i0.png": "bream", "chub_fold1_v1_i2.png": "perch"}
# Test accuracy of each configuration; RandAugment n=2 m=9 is the clear winner.
QUALITY = {
    ("none", None, None): 0.55,
    ("randaugment", 1, 5): 0.55,
    ("randaugment", 1, 9): 0.6,
    ("randaugment", 2, 5): 0.65,
    ("randaugment", 2, 9): 0.9,
}


@cache
def base_config(aug: str) -> str:
    """The composed train config of ``aug`` as YAML, interpolations kept (as Hydra saves it)."""
    cfg = compose_config("train", [f"aug={aug}", "logger=csv"])
    with open_dict(cfg):
        del cfg["hydra"]
    return OmegaConf.to_yaml(cfg)


def image_rows(images: Path) -> pd.DataFrame:
    """Every image of the fake set, written as a tiny PNG, with its subset and fold."""
    rows = []
    for c, label in enumerate(CLASSES):
        for part, videos in VIDEOS_PER_CLASS.items():
            for v in range(videos):
                for i in range(IMAGES_PER_VIDEO):
                    name = f"{label}_{part}_v{v}_i{i}.png"
                    path = images / name
                    if not path.exists():
                        path.parent.mkdir(parents=True, exist_ok=True)
                        pixels = np.full((12, 20, 3), (c * 80, 120, 200 - c * 60), np.uint8)
                        Image.fromarray(pixels).save(path)
                    rows.append(
                        {
                            "path": str(path),
                            "name": name,
                            "label": label,
                            "video": f"{label}_{part}_v{v}",
                            "part": part,
                        }
                    )
    return pd.DataFrame(rows)


def draw_predictions(rows: pd.DataFrame, quality: float, seed: int) -> pd.DataFrame:
    """Predictions that are right with probability ``quality``; flipped images are always
    predicted as the class they truly show."""
    rng = np.random.default_rng(seed)
    index = {label: i for i, label in enumerate(CLASSES)}
    probs = np.zeros((len(rows), len(CLASSES)))
    for r, (name, label) in enumerate(zip(rows["name"], rows["label"], strict=True)):
        if name in FLIPPED:
            # More confident than any chance error, so that the flipped images rank first.
            pred, confidence = index[FLIPPED[name]], 0.97
        else:
            right = rng.random() < quality
            shift = 0 if right else 1 + rng.integers(0, len(CLASSES) - 1)
            pred, confidence = (index[label] + shift) % len(CLASSES), 0.85
        probs[r] = (1.0 - confidence) / (len(CLASSES) - 1)
        probs[r, pred] = confidence
    frame = rows[["path", "label", "video"]].copy()
    frame["pred"] = [CLASSES[i] for i in probs.argmax(axis=1)]
    for i, label in enumerate(CLASSES):
        frame[f"prob_{label}"] = probs[:, i]
    return frame


def write_run(
    folder: Path,
    images: Path,
    aug: str = "none",
    n: int | None = None,
    m: int | None = None,
    fold: int = 0,
    seed: int = 0,
    status: str = "completed",
    dataset_root: str = "/data/fishcam_at",
    fit_s: float = 60.0,
) -> Path:
    """Write one run folder as ``train`` would; ``status`` may be completed, failed, incomplete."""
    cfg = OmegaConf.create(base_config(aug))
    cfg.data.fold = fold
    cfg.seed = seed
    cfg.dataset.root = dataset_root
    overrides = [f"aug={aug}", f"data.fold={fold}"]
    if aug == "randaugment":
        cfg.aug.n, cfg.aug.m = n, m
        overrides += [f"aug.n={n}", f"aug.m={m}"]
    hydra_dir = folder / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    (hydra_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (hydra_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))
    choices = {"dataset": "fishcam", "aug": aug, "data": "video_folds", "model": "resnet18"}
    (hydra_dir / "hydra.yaml").write_text(
        OmegaConf.to_yaml(OmegaConf.create({"hydra": {"runtime": {"choices": choices}}}))
    )
    if status == "incomplete":
        return folder

    rows = image_rows(images)
    val_part, train_part = f"fold{fold}", f"fold{1 - fold}"
    subsets = rows["part"].map({"test": "test", val_part: "val", train_part: "train"})
    split = rows[["path", "label", "video"]].assign(subset=subsets)
    split.to_csv(folder / "split.csv", index=False)
    record = {"job": 0, "overrides": " ".join(overrides), "output_dir": str(folder)}
    if status == "failed":
        record.update(status="failed", error="ValueError: Invalid learning rate: -1")
        (folder / "job_status.json").write_text(json.dumps(record))
        (folder / "error.txt").write_text("Traceback ...\nValueError: Invalid learning rate: -1\n")
        return folder

    quality = QUALITY[(aug, n, m)]
    metrics: dict[str, float | None] = {}
    for subset in ("val", "test"):
        chosen = rows[split["subset"] == subset].reset_index(drop=True)
        seed = zlib.crc32(f"{aug} {n} {m} {fold} {subset}".encode())
        predictions = draw_predictions(chosen, quality, seed)
        predictions.to_csv(folder / f"predictions_{subset}.csv", index=False)
        probs = torch.tensor(predictions[[f"prob_{c}" for c in CLASSES]].to_numpy())
        targets = torch.tensor(predictions["label"].map(CLASSES.index).to_numpy())
        metrics.update(
            classification_metrics(probs, targets, CLASSES, subset, predictions["video"].tolist())
        )
    metrics.update({"time/fit_s": fit_s, "time/test_s": 2.0, "time/epoch_s": fit_s / 3})
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "job_status.json").write_text(
        json.dumps({**record, "status": "completed", "error": ""})
    )
    return folder


def write_fake_sweeps(root: Path, failures: bool = True) -> list[Path]:
    """A baseline sweep (aug=none, folds 0 and 1) and a RandAugment n x m grid over two folds,
    plus one failed and one unfinished job; returns the two sweep folders."""
    images = root / "images"
    none_sweep, grid_sweep = root / "sweep_none", root / "sweep_randaugment"
    for fold in (0, 1):
        write_run(none_sweep / str(fold), images, fold=fold, fit_s=40.0)
    job = 0
    for n in (1, 2):
        for m in (5, 9):
            for fold in (0, 1):
                write_run(grid_sweep / str(job), images, "randaugment", n, m, fold, fit_s=60.0 + n)
                job += 1
    if failures:
        write_run(grid_sweep / str(job), images, "randaugment", 2, 9, 0, seed=1, status="failed")
        write_run(
            grid_sweep / str(job + 1), images, "randaugment", 2, 9, 1, seed=1, status="incomplete"
        )
    return [none_sweep, grid_sweep]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_fake_sweeps(tmp_path_factory.mktemp("logs"))


@pytest.fixture
def fast_options() -> ReportOptions:
    return ReportOptions(bootstrap_resamples=2000)


@pytest.fixture(scope="module")
def report(sweeps, tmp_path_factory):
    """The report of the fake sweeps, built once for the tests that only read it."""
    return build_report_from(
        sweeps, tmp_path_factory.mktemp("report"), ReportOptions(bootstrap_resamples=2000)
    )


def test_report_writes_tables_figures_html(report):
    result = report
    for name in (
        "report.html",
        "summary.md",
        "summary.csv",
        "comparison.csv",
        "runs.csv",
        "failed.csv",
        "gap.csv",
        "timing_jobs.csv",
        "timing_techniques.csv",
        "label_issues.csv",
        "metric_per_configuration.png",
        "val_vs_test.png",
        "time_per_technique.png",
        "per_class_f1_diff.png",
    ):
        assert (result.output_dir / name).is_file(), name
    confusions = sorted(p.name for p in result.output_dir.glob("confusion_*.png"))
    assert len(confusions) == 5
    html = result.html.read_text()
    assert html.count("data:image/png;base64,") >= len(result.figures)
    assert 'src="http' not in html
    assert "randaugment n=2 m=9" in html


def test_summary_has_mean_std_and_baseline_diff(sweeps, report):
    result = report
    summary = result.tables["summary"].set_index("configuration")

    assert list(result.tables["summary"]["configuration"])[0] == "randaugment n=2 m=9"
    assert set(summary.index) == {
        "none",
        "randaugment n=1 m=5",
        "randaugment n=1 m=9",
        "randaugment n=2 m=5",
        "randaugment n=2 m=9",
    }
    values = [
        json.loads((sweeps[1] / str(job) / "metrics.json").read_text())["test/f1_macro"]
        for job in (6, 7)
    ]
    best = summary.loc["randaugment n=2 m=9"]
    assert best["test/f1_macro mean"] == pytest.approx(np.mean(values))
    assert best["test/f1_macro std"] == pytest.approx(np.std(values, ddof=1))
    assert best["runs"] == 2
    assert best["failed"] == 2
    baseline_mean = summary.loc["none", "test/f1_macro mean"]
    assert best["test/f1_macro diff"] == pytest.approx(np.mean(values) - baseline_mean)
    assert bool(summary.loc["none", "is_baseline"])
    for metric in ("acc", "precision_macro", "recall_macro", "specificity_macro", "f1_macro"):
        assert f"test/{metric} mean" in summary.columns
        assert f"test/{metric} std" in summary.columns


def test_paired_comparison_flags_clear_gain(report):
    result = report
    comparison = result.tables["comparison"].set_index("configuration")

    best = comparison.loc["randaugment n=2 m=9"]
    assert best["baseline"] == "none"
    assert best["pairs"] == 2
    assert best["ci low"] > 0
    assert best["ci low"] <= best["mean diff"] <= best["ci high"]
    assert best["verdict"] == "better"
    assert "none" not in comparison.index


def test_paired_comparison_pairs_by_fold():
    table = pd.DataFrame(
        {
            "configuration": ["none", "none", "a", "a", "a"],
            "baseline": ["none", "none", "none", "none", "none"],
            "is_baseline": [True, True, False, False, False],
            "repeat": ["fold=0", "fold=1", "fold=0", "fold=1", "fold=2"],
            "status": ["completed"] * 5,
            "m": [0.5, 0.7, 0.6, 0.8, 0.9],
        }
    )
    row = paired_comparison(table, "m", resamples=500).iloc[0]

    assert row["pairs"] == 2
    assert row["mean diff"] == pytest.approx(0.1)
    assert row["wins"] == 2
    assert row["losses"] == 0


def test_bootstrap_interval_brackets_mean():
    differences = np.array([0.02, 0.05, -0.01, 0.04, 0.03])
    low, high = bootstrap_mean_interval(differences, resamples=5000, seed=1)

    assert low < differences.mean() < high
    assert low >= differences.min()
    assert high <= differences.max()
    with pytest.raises(ConfigError, match="confidence=1.5"):
        bootstrap_mean_interval(differences, confidence=1.5)


def test_failed_and_incomplete_jobs_listed(report):
    result = report
    failed = result.tables["failed"]

    assert sorted(failed["status"]) == ["failed", "incomplete"]
    assert failed["reason"].str.contains("Invalid learning rate").any()
    assert failed["reason"].str.contains("still running, or killed").any()
    assert (failed["configuration"] == "randaugment n=2 m=9").all()
    html = result.html.read_text()
    assert "Invalid learning rate" in html
    assert "2 of 12 jobs failed or did not finish" in html


def test_job_without_metrics_is_failed(tmp_path, fast_options):
    fast_options.label_issues = False
    images = tmp_path / "images"
    run = write_run(tmp_path / "sweep" / "0", images)
    write_run(tmp_path / "sweep" / "1", images, fold=1)
    (run / "metrics.json").unlink()

    result = build_report_from([tmp_path / "sweep"], tmp_path / "report", fast_options)
    failed = result.tables["failed"]

    assert list(failed["status"]) == ["failed"]
    assert "metrics.json is missing" in failed["reason"].iloc[0]


def test_folder_without_runs_raises(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="No training run folders found"):
        build_report_from([tmp_path / "empty"], tmp_path / "report")
    with pytest.raises(DataError, match="does not exist"):
        build_report_from([tmp_path / "missing"], tmp_path / "report")


def test_mixed_datasets_rejected_unless_forced(tmp_path, fast_options):
    fast_options.label_issues = False
    images = tmp_path / "images"
    write_run(tmp_path / "a" / "0", images, dataset_root="/data/fishcam_at")
    write_run(tmp_path / "b" / "0", images, dataset_root="/data/other_site")
    sources = [tmp_path / "a", tmp_path / "b"]

    with pytest.raises(DataError, match=r"differ in dataset.root.*other_site.*force=true"):
        build_report_from(sources, tmp_path / "report", fast_options)
    fast_options.force = True
    result = build_report_from(sources, tmp_path / "report", fast_options)
    assert any("Compared anyway" in note for note in result.notes)


def test_mixed_class_lists_rejected(tmp_path, fast_options):
    images = tmp_path / "images"
    write_run(tmp_path / "a" / "0", images)
    other = write_run(tmp_path / "b" / "0", images)
    for subset in ("val", "test"):
        path = other / f"predictions_{subset}.csv"
        pd.read_csv(path).rename(columns={"prob_perch": "prob_pike"}).to_csv(path, index=False)

    with pytest.raises(DataError, match="differ in classes.*pike"):
        build_report_from([tmp_path / "a", tmp_path / "b"], tmp_path / "report", fast_options)


def test_unknown_metric_lists_available(sweeps, tmp_path):
    options = ReportOptions(metrics=["acc", "f2_macro"])
    with pytest.raises(ConfigError, match=r"\['f2_macro'\] are not among the test metrics"):
        build_report_from(sweeps, tmp_path / "report", options)
    with pytest.raises(ConfigError, match=r"available: \['acc', 'f1_macro'"):
        build_report_from(sweeps, tmp_path / "report", options)


def test_invalid_options_raise():
    with pytest.raises(ConfigError, match="subset='train'"):
        ReportOptions(subset="train")
    with pytest.raises(ConfigError, match="confusion_normalize='rows'"):
        ReportOptions(confusion_normalize="rows")
    with pytest.raises(ConfigError, match="bootstrap_resamples=10"):
        ReportOptions(bootstrap_resamples=10)


def test_configuration_labels_from_differing_keys(sweeps):
    runs = load_runs(sweeps)
    table, keys = assign_configurations(runs)

    assert keys == ["aug.name", "aug.n", "aug.m"]
    labels = set(table["configuration"])
    assert "none" in labels
    assert "randaugment n=1 m=5" in labels
    assert (table["baseline"] == "none").all()
    assert set(table["repeat"]) == {
        "fold=0 seed=0",
        "fold=1 seed=0",
        "fold=0 seed=1",
        "fold=1 seed=1",
    }


def test_group_by_unknown_key_raises(sweeps):
    runs = load_runs(sweeps)
    with pytest.raises(ConfigError, match=r"group_by keys \['aug.magnitude'\]"):
        assign_configurations(runs, group_by=["aug.name", "aug.magnitude"])


def test_heatmap_for_two_swept_parameters(report):
    result = report
    heatmaps = [f for f in result.figures if f.section == "heatmap"]

    assert len(heatmaps) == 1
    assert heatmaps[0].title == "randaugment"
    assert heatmaps[0].path.is_file()


def test_label_issues_rank_flipped_images_first(sweeps):
    runs = load_runs(sweeps)
    issues = find_label_issues(runs, subset="val", min_per_class=5)

    top = issues.table.head(len(FLIPPED))
    assert {Path(p).name for p in top["path"]} == set(FLIPPED)
    for path, suggested in zip(top["path"], top["suggested"], strict=True):
        assert suggested == FLIPPED[Path(path).name]
    assert top["thumbnail"].str.startswith("data:image/png;base64,").all()
    assert issues.images == len(CLASSES) * 4 * IMAGES_PER_VIDEO


def test_label_issues_too_few_samples_message(sweeps):
    runs = load_runs(sweeps)
    issues = find_label_issues(runs, subset="test", min_per_class=9)

    assert any(
        "has 8 images in the pooled test predictions, fewer than min_per_class=9" in message
        for message in issues.messages
    )
    assert any("No label-error analysis" in message for message in issues.messages)
    assert issues.table.empty


def test_report_entry_config(sweeps, tmp_path):
    cfg = compose_config(
        "report",
        [f"runs=[{sweeps[0]},{sweeps[1]}]", "bootstrap_resamples=500", "label_issues=false"],
    )
    with open_dict(cfg):
        cfg.output_dir = str(tmp_path / "from_entry")
    result = build_report(cfg)

    assert result.html.is_file()
    assert result.label_issues is None
    assert len(result.tables["summary"]) == 5


def test_every_job_failed_still_reported(tmp_path, fast_options):
    images = tmp_path / "images"
    write_run(tmp_path / "sweep" / "0", images, status="failed")
    write_run(tmp_path / "sweep" / "1", images, fold=1, status="incomplete")

    result = build_report_from([tmp_path / "sweep"], tmp_path / "report", fast_options)

    assert result.tables["summary"].empty
    assert len(result.tables["failed"]) == 2
    assert result.figures == []
    assert "Invalid learning rate" in result.html.read_text()
    assert any("No label-error analysis" in m for m in result.label_issues.messages)


def test_reused_run_counted_once(tmp_path, fast_options):
    images = tmp_path / "images"
    original = write_run(tmp_path / "a" / "0", images)
    write_run(tmp_path / "a" / "1", images, fold=1)
    reused = write_run(tmp_path / "b" / "0", images)
    (reused / "reused_from.txt").write_text(f"{original}\n")

    runs = load_runs([tmp_path / "a", tmp_path / "b"])

    assert len(runs) == 2
    assert reused.resolve() not in {run.path for run in runs}
    assert len(load_runs([tmp_path / "b"])) == 1
