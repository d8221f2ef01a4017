"""The simulated fish counter: species, conditions, videos, the cached dataset=sim source."""

from __future__ import annotations

import json
import logging
import threading

import numpy as np
import pandas as pd
import pytest

from fishaug.errors import ConfigError
from fishaug.ingest import read_frames
from fishaug.sim.render import simulate_counter
from fishaug.sim.scene import CONDITIONS, Conditions, finish_frame, make_scene, sample_conditions
from fishaug.sim.source import sim_source
from fishaug.sim.species import SPECIES, FishSprite
from fishaug.training import train

TINY = {
    "species": ["bream", "eel", "perch"],
    "videos_per_species": 2,
    "frames_per_video": 10,
    "width": 64,
    "height": 48,
    "progress": False,
}


@pytest.mark.parametrize("name", sorted(SPECIES))
def test_species_sprite(name):
    look = SPECIES[name]
    sprite = FishSprite(look, 90, np.random.default_rng(0))
    rgb, alpha = sprite.render(0.0)

    assert rgb.shape == (*alpha.shape, 3)
    assert rgb.dtype == np.float32
    assert alpha.min() >= 0.0
    assert alpha.max() <= 1.0
    rows = np.flatnonzero((alpha > 0.5).any(axis=1))
    cols = np.flatnonzero((alpha > 0.5).any(axis=0))
    length, height = cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1
    # The drawn fish is about the requested length, and longer than tall.
    assert 80 <= length <= 92
    assert height < length


def test_species_differ_in_shape():
    def proportions(name: str) -> float:
        alpha = FishSprite(SPECIES[name], 120, np.random.default_rng(0)).render(0.0)[1]
        body = alpha > 0.5
        return body.any(axis=1).sum() / body.any(axis=0).sum()

    assert len(SPECIES) >= 8
    assert proportions("eel") < proportions("pike") < proportions("perch") < proportions("bream")


def test_tail_beat_changes_sprite():
    sprite = FishSprite(SPECIES["perch"], 80, np.random.default_rng(0))
    assert not np.array_equal(sprite.render(0.0)[1], sprite.render(np.pi)[1])


@pytest.mark.parametrize("name", [c for c in CONDITIONS if c not in ("cut", "empty")])
def test_condition_changes_frame(name):
    rng = np.random.default_rng(1)
    plain = Conditions(noise=0.0)
    drawn = sample_conditions(rng, dict.fromkeys(CONDITIONS, 0.0) | {name: 1.0})
    drawn = Conditions(**{**drawn.__dict__, "noise": drawn.noise if name == "noise" else 0.0})
    assert drawn.names == (name,)
    scene = make_scene(80, 60, drawn, np.random.default_rng(2))
    frame = scene.background.copy()

    reference = finish_frame(frame, scene, plain, np.random.default_rng(3)).astype(float)
    changed = finish_frame(frame, scene, drawn, np.random.default_rng(3)).astype(float)

    if name == "low_res":
        assert changed.shape[1] < reference.shape[1]
    elif name == "dark":
        assert changed.mean() < 0.6 * reference.mean()
    elif name == "overexposed":
        assert changed.mean() > 1.3 * reference.mean()
    elif name == "blur":
        assert np.abs(np.diff(changed, axis=1)).mean() < np.abs(np.diff(reference, axis=1)).mean()
    else:
        assert np.abs(changed - reference).mean() > 1.0


def test_simulator_is_deterministic(tmp_path):
    arguments = {k: v for k, v in TINY.items() if k != "progress"}
    conditions = dict.fromkeys(CONDITIONS, 0.5)
    first = simulate_counter(
        tmp_path / "a", **arguments, seed=3, conditions=conditions, progress=False
    )
    second = simulate_counter(
        tmp_path / "b", **arguments, seed=3, conditions=conditions, progress=False
    )
    other = simulate_counter(
        tmp_path / "c", **arguments, seed=4, conditions=conditions, progress=False
    )

    assert first.annotations.read_text() == second.annotations.read_text()
    assert first.videos_table.read_text() == second.videos_table.read_text()
    for video in sorted(first.videos_dir.rglob("*.avi")):
        twin = second.videos_dir / video.relative_to(first.videos_dir)
        assert video.read_bytes() == twin.read_bytes(), video.name
    assert first.annotations.read_text() != other.annotations.read_text()


def test_simulator_boxes_match_frames(tmp_path):
    result = simulate_counter(
        tmp_path,
        species=["pike", "eel"],
        videos_per_species=2,
        frames_per_video=12,
        width=80,
        height=60,
        conditions={"low_res": 1.0, "empty": 1.0},
        progress=False,
    )
    boxes = pd.read_csv(result.annotations)
    assert list(boxes.columns) == ["video", "frame", "x", "y", "w", "h", "label", "track"]
    assert boxes["video"].nunique() == 4
    for video, rows in boxes.groupby("video"):
        frames = list(read_frames(result.videos_dir / f"{video}.avi"))
        height, width = frames[0].shape[:2]
        assert len(frames) == len(rows) == 12
        assert width < 80  # low resolution
        fish = rows.dropna(subset=["x"])
        assert 0 < len(fish) < 12  # some empty frames, some with the fish
        assert (fish["x"] >= 0).all()
        assert (fish["x"] + fish["w"] <= width).all()
        assert (fish["y"] >= 0).all()
        assert (fish["y"] + fish["h"] <= height).all()


def test_sim_source_caches_by_settings(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        manifest = sim_source(str(tmp_path), seed=0, **TINY)
    assert "Generating a simulated fish counter" in caplog.text
    assert set(manifest["label"]) == {"bream", "eel", "perch"}
    assert manifest["video"].nunique() == 6
    assert {"path", "label", "video", "track", "frame", "x", "y", "w", "h"} <= set(manifest.columns)
    folders = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(folders) == 1
    done = json.loads((folders[0] / "done.json").read_text())
    assert done["crops"] == len(manifest)

    caplog.clear()
    with caplog.at_level(logging.INFO):
        again = sim_source(str(tmp_path), seed=0, **TINY)
    assert "Reusing the simulated fish counter" in caplog.text
    pd.testing.assert_frame_equal(manifest, again)

    sim_source(str(tmp_path), seed=1, **TINY)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2


def test_sim_source_concurrent_first_use(tmp_path, caplog):
    results: list[pd.DataFrame] = []

    def load() -> None:
        results.append(sim_source(str(tmp_path), seed=0, **TINY))

    with caplog.at_level(logging.INFO):
        threads = [threading.Thread(target=load) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert len(results) == 2
    pd.testing.assert_frame_equal(results[0], results[1])
    assert caplog.text.count("Generating a simulated fish counter") == 1
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"species": ["bream", "shark"]}, r"unknown species \['shark'\]"),
        ({"species": ["bream"]}, "needs at least two species"),
        ({"conditions": {"fog": 0.5}}, r"unknown condition\(s\) \['fog'\]"),
        ({"conditions": {"dark": 1.5}}, "dataset.conditions.dark=1.5 is out of range"),
        ({"frames_per_video": 4}, "dataset.frames_per_video=4 is out of range"),
        ({"video_format": "webm"}, "dataset.video_format='webm' is not valid"),
    ],
)
def test_sim_source_rejects_bad_settings(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        sim_source(str(tmp_path), **{**TINY, **overrides})


def test_sim_to_training(train_config, tmp_path):
    cfg = train_config(
        [
            "dataset=sim",
            "dataset.species=[bream,eel,perch]",
            "dataset.videos_per_species=3",
            "dataset.frames_per_video=10",
            "dataset.width=64",
            "dataset.height=48",
            "dataset.progress=false",
            "data.test_per_class=1",
            "data.num_folds=2",
            "debug=fdr",
        ]
    )
    metrics = train(cfg)

    assert "test/f1_macro" in metrics
    assert (tmp_path / "run" / "data" / "sim").is_dir()
    split = pd.read_csv(tmp_path / "run" / "split.csv")
    assert set(split["subset"]) == {"train", "val", "test"}
    assert set(split["label"]) == {"bream", "eel", "perch"}
    assert split.groupby("video")["subset"].nunique().max() == 1
