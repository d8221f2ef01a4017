"""Video ingestion: sequential reading, frame selection, annotations, detector, prepare."""

from __future__ import annotations

import logging
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import REPO_ROOT, compose_config

from fishaug.errors import ConfigError, DataError
from fishaug.ingest import (
    FrameSelector,
    MotionDetector,
    find_videos,
    load_annotations,
    normalize_label,
    prepare,
    prepare_videos,
    read_frames,
)
from fishaug.ingest.video import header_frame_count, write_video

BITS = 8


def index_frames(count: int, width: int = 128, height: int = 48) -> list[np.ndarray]:
    """Frames whose index is written as 8 black or white vertical bands (bit 0 on the left)."""
    band = width // BITS
    frames = []
    for index in range(count):
        frame = np.zeros((height, width, 3), np.uint8)
        for bit in range(BITS):
            if index >> bit & 1:
                frame[:, bit * band : (bit + 1) * band] = 255
        frames.append(frame)
    return frames


def decode_index(frame: np.ndarray) -> int:
    band = frame.shape[1] // BITS
    grey = frame.mean(axis=2)
    # Read the middle of each band, away from compression artefacts at the band edges.
    bits = [
        grey[:, b * band + band // 4 : (b + 1) * band - band // 4].mean() > 128 for b in range(BITS)
    ]
    return sum(int(bit) << b for b, bit in enumerate(bits))


def patch_avi_frame_count(path: Path, count: int) -> None:
    """Overwrite the frame count of an AVI's main header and stream header."""
    data = bytearray(path.read_bytes())
    main = data.find(b"avih")
    stream = data.find(b"strh")
    # avih: 8 bytes of chunk header, then dwTotalFrames at offset 16 of the structure.
    data[main + 24 : main + 28] = struct.pack("<I", count)
    # strh: 8 bytes of chunk header, then dwLength at offset 32.
    data[stream + 40 : stream + 44] = struct.pack("<I", count)
    path.write_bytes(bytes(data))


def moving_patch_video(
    path: Path, count: int = 12, size: tuple[int, int] = (96, 64), first: int = 0
) -> list[tuple[int, int, int, int] | None]:
    """Write a video of a red 20x10 patch moving right on grey from frame ``first`` on.

    Returns the patch's box (x, y, w, h) per frame, None before ``first``.
    """
    width, height = size
    frames, boxes = [], []
    for index in range(count):
        frame = np.full((height, width, 3), 100, np.uint8)
        box = None
        if index >= first:
            x, y = 4 + 5 * (index - first), 20
            frame[y : y + 10, x : x + 20] = (0, 0, 255)
            box = (x, y, 20, 10)
        frames.append(frame)
        boxes.append(box)
    write_video(path, frames)
    return boxes


def write_counter(root: Path, species=("Brown Trout", "perch"), videos: int = 2) -> dict[str, list]:
    """Species folders with moving-patch videos; returns the boxes per '<folder>/<stem>'."""
    boxes = {}
    for name in species:
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(videos):
            boxes[f"{name}/clip{k}"] = moving_patch_video(root / name / f"clip{k}.avi")
    return boxes


# Reading videos


@pytest.mark.parametrize("claimed", [5, 500])
def test_read_frames_ignores_wrong_header(tmp_path, claimed):
    path = write_video(tmp_path / "clip.avi", index_frames(23))
    patch_avi_frame_count(path, claimed)

    assert header_frame_count(path) == claimed
    decoded = [decode_index(frame) for frame in read_frames(path)]
    assert decoded == list(range(23))


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov"])
def test_read_frames_other_containers(tmp_path, suffix):
    path = write_video(tmp_path / f"clip{suffix}", index_frames(17))
    decoded = [decode_index(frame) for frame in read_frames(path)]
    assert decoded == list(range(17))


def test_read_frames_rejects_corrupt_file(tmp_path):
    path = tmp_path / "broken.avi"
    path.write_bytes(b"not a video" * 100)
    with pytest.raises(DataError, match="Could not open video .*broken.avi"):
        list(read_frames(path))
    with pytest.raises(DataError, match="Video not found"):
        list(read_frames(tmp_path / "missing.avi"))


# Species folders


def test_normalize_label():
    assert normalize_label(" Brown  Trout") == "brown_trout"
    assert normalize_label("BROWN_TROUT") == "brown_trout"
    assert normalize_label("perch") == "perch"


def test_find_videos_names_and_warnings(tmp_path, caplog):
    write_counter(tmp_path, species=("Brown Trout",), videos=1)
    (tmp_path / "empty species").mkdir()
    moving_patch_video(tmp_path / "loose.avi")

    with caplog.at_level(logging.WARNING):
        videos = find_videos(tmp_path)

    assert [(v.label, v.video_id, v.relative) for v in videos] == [
        ("brown_trout", "brown_trout/clip0", "Brown Trout/clip0")
    ]
    assert "empty species" in caplog.text
    assert "loose.avi" in caplog.text


def test_find_videos_rejects_duplicate_ids(tmp_path):
    (tmp_path / "perch").mkdir()
    moving_patch_video(tmp_path / "perch" / "a.avi")
    moving_patch_video(tmp_path / "perch" / "a.mp4")
    with pytest.raises(DataError, match="both get the video id 'perch/a'"):
        find_videos(tmp_path)


# Frame selection


def block_frame(fraction: float, size: int = 100, shift: int = 0) -> np.ndarray:
    """A grey frame with a white block that covers ``fraction`` of it, starting at column shift."""
    frame = np.full((size, size, 3), 80, np.uint8)
    columns = round(fraction * size)
    frame[:, shift : shift + columns] = 255
    return frame


def test_frame_selector_threshold():
    base = block_frame(0.0)
    changed = block_frame(0.05)  # 5 % of the pixels change by 175 grey levels

    # The 5x5 blur spreads the block edge over two more columns, so about 7 % count as changed.
    measured = FrameSelector(threshold=0).difference(
        FrameSelector().prepare(base), FrameSelector().prepare(changed)
    )
    assert 0.045 < measured < 0.08

    low = FrameSelector(threshold=0.03, compare_size=100)
    assert low.keep(0, base) is True  # the first frame is always kept
    assert low.keep(1, changed) is True
    high = FrameSelector(threshold=0.08, compare_size=100)
    assert high.keep(0, base) is True
    assert high.keep(1, changed) is False


def test_frame_selector_compares_with_last_kept():
    selector = FrameSelector(threshold=0.05, compare_size=100)
    # A block that grows by one column (1 % of the frame) per frame.
    frames = [block_frame(0.01 * i) for i in range(12)]
    prepared = [selector.prepare(frame) for frame in frames]
    steps = [selector.difference(a, b) for a, b in zip(prepared[1:], prepared[:-1], strict=True)]
    assert max(steps) <= 0.05  # no step from one frame to the next passes the threshold

    kept = [i for i, frame in enumerate(frames) if selector.keep(i, frame)]
    # The change adds up from the last kept frame, so frames are kept, but never two in a row.
    assert kept[0] == 0
    assert len(kept) >= 3
    assert all(b - a >= 2 for a, b in zip(kept, kept[1:], strict=False))


def test_frame_selector_every_n_and_keep_all():
    every_third = FrameSelector(threshold=None, every_n=3)
    assert [every_third.keep(i, block_frame(0.0)) for i in range(7)] == [
        True, False, False, True, False, False, True,
    ]  # fmt: skip
    keep_all = FrameSelector(threshold=None)
    assert all(keep_all.keep(i, block_frame(0.0)) for i in range(4))


def test_frame_selector_ignores_sensor_noise():
    rng = np.random.default_rng(0)
    selector = FrameSelector(threshold=0.01, pixel_delta=2, noise_factor=3)
    noisy = [
        np.clip(100 + rng.normal(0, 12, (120, 160, 3)), 0, 255).astype(np.uint8) for _ in range(6)
    ]
    assert [selector.keep(i, frame) for i, frame in enumerate(noisy)] == [True] + [False] * 5

    no_noise_model = FrameSelector(threshold=0.01, pixel_delta=2, noise_factor=0)
    assert sum(no_noise_model.keep(i, frame) for i, frame in enumerate(noisy)) == 6


def test_frame_selector_mean_abs():
    selector = FrameSelector(metric="mean_abs", threshold=9.0)
    base = np.full((40, 40, 3), 100, np.uint8)
    assert selector.keep(0, base)
    assert selector.keep(1, base + 10)
    strict = FrameSelector(metric="mean_abs", threshold=11.0)
    assert strict.keep(0, base)
    assert not strict.keep(1, base + 10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metric": "ssim"}, "ingest.frames.metric='ssim' is not valid"),
        ({"threshold": -0.1}, "ingest.frames.threshold=-0.1 is out of range"),
        ({"every_n": 0}, "ingest.frames.every_n=0 is out of range"),
        ({"noise_factor": -1}, "ingest.frames.noise_factor=-1 is out of range"),
    ],
)
def test_frame_selector_rejects_bad_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        FrameSelector(**kwargs)


# Annotations and crops


def test_csv_annotation_crops(tmp_path):
    boxes = write_counter(tmp_path / "videos", species=("perch",), videos=1)["perch/clip0"]
    rows = [
        {"video": "perch/clip0", "frame": i, "x": x, "y": y, "w": w, "h": h, "label": "perch"}
        for i, (x, y, w, h) in enumerate(boxes)
        if i not in (0, 1)
    ]
    # An empty box marks frame 0 as without fish. Frame 1 is not annotated at all.
    rows.append(
        {"video": "perch/clip0", "frame": 0, "x": "", "y": "", "w": "", "h": "", "label": ""}
    )
    pd.DataFrame(rows).to_csv(tmp_path / "boxes.csv", index=False)

    result = prepare_videos(
        tmp_path / "videos",
        tmp_path / "out",
        annotations=tmp_path / "boxes.csv",
        frames={"threshold": None},
        crop={"margin": 0.0},
        progress=False,
    )

    manifest = result.manifest
    assert manifest["frame"].tolist() == list(range(2, 12))
    for row in manifest.itertuples():
        assert (row.x, row.y, row.w, row.h) == boxes[row.frame]
        crop = cv2.imread(str(tmp_path / "out" / row.path))
        assert crop.shape[:2] == (10, 20)
        # The crop is the red patch. Motion JPEG blurs colour over its outer two pixels.
        assert np.abs(crop[2:-2, 2:-2].astype(int) - [0, 0, 255]).max() <= 40
    assert set(manifest["video"]) == {"perch/clip0"}
    assert set(manifest["track"]) == {"fish1"}
    assert result.summary.loc["perch", "empty_frames"] == 1
    assert result.summary.loc["perch", "frames_kept"] == 12

    written = pd.read_csv(result.manifest_path)
    assert list(written.columns) == ["path", "label", "video", "track", "frame", "x", "y", "w", "h"]


def test_yolo_annotation_crops(tmp_path):
    boxes = write_counter(tmp_path / "videos", species=("Brown Trout",), videos=1)
    labels = tmp_path / "yolo"
    folder = labels / "Brown Trout" / "clip0"
    folder.mkdir(parents=True)
    (labels / "classes.txt").write_text("Salmo trutta\nfish\n")
    for i, (x, y, w, h) in enumerate(boxes["Brown Trout/clip0"]):
        line = f"0 {(x + w / 2) / 96} {(y + h / 2) / 64} {w / 96} {h / 64}\n"
        (folder / f"frame_{i:06d}.txt").write_text(line if i != 3 else "")

    result = prepare_videos(
        tmp_path / "videos",
        tmp_path / "out",
        annotations=labels,
        frames={"threshold": None},
        crop={"margin": 0.0},
        label_from="annotation",
        progress=False,
    )

    manifest = result.manifest
    assert 3 not in manifest["frame"].tolist()
    assert len(manifest) == 11
    assert set(manifest["label"]) == {"salmo_trutta"}
    assert set(manifest["video"]) == {"brown_trout/clip0"}
    for row in manifest.itertuples():
        assert (row.x, row.y, row.w, row.h) == boxes["Brown Trout/clip0"][row.frame]


def test_boxes_outside_frame_clip_or_reject(tmp_path, caplog):
    write_counter(tmp_path / "videos", species=("perch",), videos=1)
    rows = [
        {"video": "clip0", "frame": 0, "x": -5, "y": 50, "w": 20, "h": 30},  # 96x64 frame
        {"video": "clip0", "frame": 1, "x": 200, "y": 10, "w": 20, "h": 10},  # entirely outside
        {"video": "clip0", "frame": 2, "x": 10, "y": 10, "w": 20, "h": 10},
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "boxes.csv", index=False)

    def run(policy: str) -> pd.DataFrame:
        return prepare_videos(
            tmp_path / "videos",
            tmp_path / f"out_{policy}",
            annotations=tmp_path / "boxes.csv",
            frames={"threshold": None},
            crop={"margin": 0.0, "out_of_frame": policy},
            progress=False,
        ).manifest

    with caplog.at_level(logging.WARNING):
        clipped = run("clip")
    assert clipped[["frame", "x", "y", "w", "h"]].values.tolist() == [
        [0, 0, 50, 15, 14],
        [2, 10, 10, 20, 10],
    ]
    assert "boxes.csv" in caplog.text
    assert "frame 0 box (-5, 50, 20, 30) reaches past the frame edge: clipped" in caplog.text
    assert "frame 1 box (200, 10, 20, 10) lies entirely outside the frame: dropped" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        rejected = run("reject")
    assert rejected["frame"].tolist() == [2]
    assert "reaches past the frame edge: rejected" in caplog.text


def test_square_crops(tmp_path):
    write_counter(tmp_path / "videos", species=("perch",), videos=1)
    rows = [
        {"video": "clip0", "frame": 0, "x": 30, "y": 20, "w": 20, "h": 10},
        {"video": "clip0", "frame": 1, "x": 0, "y": 0, "w": 30, "h": 8},  # square shifted inside
        {
            "video": "clip0",
            "frame": 2,
            "x": 0,
            "y": 0,
            "w": 90,
            "h": 10,
        },  # wider than the frame is high
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "boxes.csv", index=False)
    result = prepare_videos(
        tmp_path / "videos",
        tmp_path / "out",
        annotations=tmp_path / "boxes.csv",
        frames={"threshold": None},
        crop={"square": True, "margin": 0.0},
        progress=False,
    )
    sizes = [cv2.imread(str(tmp_path / "out" / p)).shape[:2] for p in result.manifest["path"]]
    assert sizes == [(20, 20), (30, 30), (90, 90)]
    # The fish box in the manifest stays the annotated box, not the square.
    assert result.manifest["w"].tolist() == [20, 30, 90]


def test_csv_annotation_errors(tmp_path, caplog):
    write_counter(tmp_path / "videos", species=("perch",), videos=1)
    csv = tmp_path / "boxes.csv"

    csv.write_text("video,frame,x,y,w,h\nclip0,0,1,2,,4\n")
    with pytest.raises(DataError, match=r"boxes.csv' line 2 has a partly empty box"):
        load_annotations(csv)
    csv.write_text("video,frame,x,y,w,h\nclip0,-1,1,2,3,4\n")
    with pytest.raises(DataError, match=r"line 2 has frame='-1'"):
        load_annotations(csv)
    csv.write_text("video,frame,x,y,w,h\nclip0,0,1,2,0,4\n")
    with pytest.raises(DataError, match=r"line 2 has a box of size 0.0 x 4.0"):
        load_annotations(csv)
    csv.write_text("video,frame,x,y\nclip0,0,1,2\n")
    with pytest.raises(DataError, match=r"lacks the column\(s\) \['w', 'h'\]"):
        load_annotations(csv)
    with pytest.raises(DataError, match="Annotation file or folder not found"):
        load_annotations(tmp_path / "missing.csv")

    csv.write_text(
        "video,frame,x,y,w,h\nclip0,0,1,2,10,10\nclip0,40,1,2,10,10\nperch/ghost.avi,0,1,2,10,10\n"
    )
    with caplog.at_level(logging.WARNING):
        prepare_videos(tmp_path / "videos", tmp_path / "out", annotations=csv, progress=False)
    assert "name 1 video(s) not found in the video folder" in caplog.text
    assert "perch/ghost" in caplog.text
    assert "name frame(s) [40] past its end: the video has 12 frames" in caplog.text


def test_yolo_annotation_errors(tmp_path):
    folder = tmp_path / "yolo" / "clip0"
    folder.mkdir(parents=True)
    (folder / "frame_000001.txt").write_text("0 0.5 0.5 0.2\n")
    with pytest.raises(DataError, match=r"frame_000001.txt' line 1 has 4 fields"):
        load_annotations(tmp_path / "yolo")
    (folder / "frame_000001.txt").write_text("3 0.5 0.5 0.2 0.2\n")
    (tmp_path / "yolo" / "classes.txt").write_text("perch\n")
    with pytest.raises(DataError, match="has class 3, but the class file lists 1 classes"):
        load_annotations(tmp_path / "yolo")
    (folder / "frame_000001.txt").unlink()
    (folder / "notes.txt").write_text("")
    with pytest.raises(DataError, match="has no frame number at the end of its name"):
        load_annotations(tmp_path / "yolo")


def test_annotation_stem_must_be_unique(tmp_path):
    write_counter(tmp_path / "videos", species=("perch", "pike"), videos=1)
    csv = tmp_path / "boxes.csv"
    csv.write_text("video,frame,x,y,w,h\nclip0,0,1,2,10,10\n")
    with pytest.raises(DataError, match="fits several videos .* Name it as <species>/<stem>"):
        prepare_videos(tmp_path / "videos", tmp_path / "out", annotations=csv, progress=False)


# Motion detector


def test_detector_finds_moving_blob():
    rng = np.random.default_rng(0)
    detector = MotionDetector()
    found = []
    for index in range(30):
        frame = np.clip(90 + rng.normal(0, 3, (120, 160, 3)), 0, 255).astype(np.uint8)
        truth = None
        if index >= 5:
            x = 5 * (index - 5)
            cv2.ellipse(frame, (x + 20, 60), (20, 8), 0, 0, 360, (30, 160, 200), -1)
            truth = (x, 52, 40, 16)
        box = detector(frame)
        if truth is None:
            assert box is None, f"frame {index}: detection on an empty frame"
        elif truth[0] >= 0 and truth[0] + truth[2] <= 160:
            assert box is not None, f"frame {index}: fish missed"
            found.append(iou((box.x, box.y, box.w, box.h), truth))
    assert len(found) >= 20
    assert min(found) > 0.7


def iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_prepare_with_detector(tmp_path):
    (tmp_path / "videos" / "perch").mkdir(parents=True)
    boxes = moving_patch_video(tmp_path / "videos" / "perch" / "clip0.avi", count=16, first=3)
    result = prepare_videos(tmp_path / "videos", tmp_path / "out", progress=False)
    manifest = result.manifest
    assert len(manifest) >= 10
    assert manifest["frame"].min() >= 3
    for row in manifest.itertuples():
        assert iou((row.x, row.y, row.w, row.h), boxes[row.frame]) > 0.6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_area": 1.5}, "ingest.detector.min_area=1.5 is out of range"),
        ({"learning_rate": 2}, "ingest.detector.learning_rate=2 is out of range"),
        ({"history": 0}, "ingest.detector.history=0 is out of range"),
    ],
)
def test_detector_rejects_bad_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        MotionDetector(**kwargs)


# The prepare pipeline


def prepare_config(tmp_path: Path, overrides: list[str]):
    return compose_config(
        "prepare",
        [
            f"input_dir={tmp_path / 'videos'}",
            f"dataset_dir={tmp_path / 'out'}",
            "progress=false",
            *overrides,
        ],
        output_dir=tmp_path / "run",
    )


def test_corrupt_video_reported_others_finish(tmp_path, caplog):
    write_counter(tmp_path / "videos")
    (tmp_path / "videos" / "perch" / "broken.mp4").write_bytes(b"\x00garbage" * 200)
    empty = cv2.VideoWriter(
        str(tmp_path / "videos" / "perch" / "empty.avi"),
        cv2.VideoWriter_fourcc(*"MJPG"),
        10,
        (32, 32),
    )
    empty.release()

    with caplog.at_level(logging.ERROR), pytest.raises(DataError, match=r"2 video\(s\) failed"):
        prepare(prepare_config(tmp_path, []))
    assert "broken.mp4" in caplog.text
    assert "empty.avi' has no frames" in caplog.text

    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert set(manifest["video"]) == {
        "brown_trout/clip0", "brown_trout/clip1", "perch/clip0", "perch/clip1",
    }  # fmt: skip
    failed = pd.read_csv(tmp_path / "out" / "failed_videos.csv")
    assert sorted(Path(p).name for p in failed["path"]) == ["broken.mp4", "empty.avi"]
    summary = pd.read_csv(tmp_path / "out" / "summary.csv", index_col="label")
    assert summary.loc["perch", "videos"] == 4
    assert summary.loc["perch", "failed"] == 2

    result = prepare(prepare_config(tmp_path, ["allow_failures=true"]))
    assert len(result.failures) == 2


def test_prepare_needs_input_dir(tmp_path):
    cfg = compose_config("prepare", [], output_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="input_dir is missing"):
        prepare(cfg)


def test_prepare_rerun_reuses_videos(tmp_path):
    write_counter(tmp_path / "videos")
    first = prepare(prepare_config(tmp_path, []))
    first_csv = (tmp_path / "out" / "manifest.csv").read_text()

    second = prepare(prepare_config(tmp_path, []))
    assert (tmp_path / "out" / "manifest.csv").read_text() == first_csv
    pd.testing.assert_frame_equal(first.summary, second.summary)

    # A changed setting redoes the videos.
    changed = prepare(prepare_config(tmp_path, ["ingest.frames.threshold=0.04"]))
    assert len(changed.manifest) < len(first.manifest)


@pytest.mark.slow
def test_prepare_entry_point_exit_code(tmp_path):
    write_counter(tmp_path / "videos", species=("perch",), videos=1)
    (tmp_path / "videos" / "perch" / "broken.avi").write_bytes(b"junk" * 50)
    command = [
        sys.executable,
        "prepare.py",
        f"input_dir={tmp_path / 'videos'}",
        f"dataset_dir={tmp_path / 'out'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "progress=false",
    ]
    failed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    assert failed.returncode != 0
    assert "broken.avi" in failed.stderr + failed.stdout
    # The good video is still prepared.
    assert len(pd.read_csv(tmp_path / "out" / "manifest.csv")) > 0
