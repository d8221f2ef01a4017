"""W&B runs in offline mode: names, groups, tags, the flattened config and the summary."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from google.protobuf.message import DecodeError
from hydra.core.utils import JobReturn, JobStatus

from fishaug.report.hydra_callbacks import WandbFinishCallback, swept_keys
from fishaug.report.wandb_run import run_group, run_name
from fishaug.training import train

wandb = pytest.importorskip("wandb")

# W&B's offline transaction log (run-<id>.wandb) uses the LevelDB log format: after a 7-byte
# file header, 32 KiB blocks of records, each a 4-byte checksum, a 2-byte little-endian length,
# a 1-byte type (1 full, 2 first, 3 middle, 4 last fragment) and a serialised protobuf Record.
BLOCK_SIZE = 32768
HEADER_SIZE = 7


def read_offline_run(path: Path) -> dict:
    """Read name, group, tags, config, summary and exit code from an offline run's .wandb file."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    run: dict = {"config": {}, "summary": {}, "exit_code": None}
    offset, pending = HEADER_SIZE, b""
    while offset + HEADER_SIZE <= len(data):
        left_in_block = BLOCK_SIZE - offset % BLOCK_SIZE
        if left_in_block < HEADER_SIZE:
            offset += left_in_block
            continue
        length = int.from_bytes(data[offset + 4 : offset + 6], "little")
        kind = data[offset + 6]
        chunk = data[offset + HEADER_SIZE : offset + HEADER_SIZE + length]
        offset += HEADER_SIZE + length
        if kind in (2, 3):
            pending += chunk
            continue
        if kind not in (1, 4):
            continue
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending + chunk)
        pending = b""
        _apply(record, run)
    return run


def _apply(record, run: dict) -> None:
    kind = record.WhichOneof("record_type")
    if kind == "run":
        run.update(
            name=record.run.display_name,
            group=record.run.run_group,
            tags=list(record.run.tags),
        )
        updates = record.run.config.update
    elif kind == "config":
        updates = record.config.update
    elif kind == "summary":
        for item in record.summary.update:
            key = item.key or "/".join(item.nested_key)
            run["summary"][key] = json.loads(item.value_json)
        return
    elif kind == "exit":
        run["exit_code"] = record.exit.exit_code
        return
    else:
        return
    for item in updates:
        run["config"][item.key] = json.loads(item.value_json)


def offline_runs(folder: Path) -> list[Path]:
    return sorted(folder.glob("wandb/offline-run-*/run-*.wandb"))


def read_finished_run(path: Path, timeout_s: float = 60.0) -> dict:
    """Read an offline run once its exit record is on disk.

    ``wandb.finish()`` can return before W&B's service process has written the last records,
    so the file is read again until the exit record appears.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            run = read_offline_run(path)
        except DecodeError:
            run = {"exit_code": None}  # a record still being written
        if run["exit_code"] is not None or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert run["exit_code"] is not None, f"{path} has no exit record after {timeout_s} s"
    return run


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """W&B in offline mode with its settings and caches under tmp_path."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    yield
    if wandb.run is not None:
        wandb.finish()


def test_run_name_from_swept_overrides():
    overrides = [
        "dataset=fishcam",
        "aug=randaugment",
        "aug.n=2",
        "aug.m=9",
        "data.fold=1",
        "trainer.max_epochs=3",
    ]
    swept = ["aug.n", "aug.m", "data.fold"]

    assert run_name("randaugment", overrides, swept) == "randaugment n=2 m=9 fold=1"
    assert run_name("randaugment", overrides, None) == "randaugment n=2 m=9 fold=1"
    assert run_name("none", ["seed=3", "+trainer.fast=1"], None) == "none seed=3"


def test_run_group_prefers_experiment():
    assert run_group("randaugment", Path("/logs/multiruns/2026-01-01")) == "randaugment"
    assert run_group(None, Path("/logs/multiruns/2026-01-01")) == "sweep 2026-01-01"
    assert run_group(None, None) is None


def test_swept_keys_of_multirun():
    overrides = ["dataset=fishcam", "aug=randaugment", "aug.n=1,2", "aug.m=5,9", "+x=a,b"]
    params = {"seed": "range(3)", "model": "resnet18"}

    assert swept_keys(overrides, params) == ["seed", "aug.n", "aug.m", "x"]


def test_swept_keys_command_line_narrows():
    params = {"model": "resnet18,resnet50", "aug.m": "int(interval(0,30))"}

    assert swept_keys(["model=resnet18"], params) == ["aug.m"]


@pytest.mark.slow
def test_offline_run_holds_config_and_summary(wandb_offline, train_config, image_dataset, tmp_path):
    cfg = train_config(
        [
            "dataset=manifest",
            f"dataset.path={image_dataset}",
            "data.test_per_class=1",
            "data.num_folds=3",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            "logger=wandb",
            "aug=randaugment",
            "aug.n=1",
            "data.fold=2",
        ]
    )
    metrics = train(cfg)

    assert wandb.run is None
    files = offline_runs(tmp_path / "run")
    assert len(files) == 1
    run = read_finished_run(files[0])
    assert run["name"].startswith("randaugment")
    assert "n=1" in run["name"].split()
    assert "fold=2" in run["name"].split()
    assert {"aug:randaugment", "model:resnet18", "split:video_folds", "fold:2"} <= set(run["tags"])
    assert run["config"]["aug.n"] == 1
    assert run["config"]["data.fold"] == 2
    assert run["config"]["model.optimizer.lr"] == pytest.approx(0.001)
    assert run["summary"]["test/f1_macro"] == pytest.approx(metrics["test/f1_macro"])
    assert run["summary"]["time/fit_s"] == pytest.approx(metrics["time/fit_s"])
    assert run["summary"]["status"] == "completed"
    assert run["summary"]["test/per_class/_type"] == "table-file"
    assert run["summary"]["test/confusion_matrix_table/_type"] == "table-file"
    assert run["exit_code"] == 0


def test_failed_job_finishes_run(wandb_offline, tmp_path):
    wandb.init(project="fishaug", dir=str(tmp_path), name="failing job")
    WandbFinishCallback().on_job_end(
        config=None, job_return=JobReturn(status=JobStatus.FAILED, _return_value=ValueError())
    )

    assert wandb.run is None
    run = read_finished_run(offline_runs(tmp_path)[0])
    assert run["exit_code"] == 1
    assert run["summary"]["status"] == "failed"
