"""From fish-counter videos to a labelled, video-grouped manifest of fish crops.

``read_frames`` decodes a video frame by frame, ``FrameSelector`` drops near-duplicate frames,
boxes come from annotation files (CSV or YOLO) or from ``MotionDetector``, and
``prepare_videos`` ties the steps together and writes crops plus ``manifest.csv``.
"""

from fishaug.ingest.annotations import AnnotationSet, Box, load_annotations
from fishaug.ingest.detector import MotionDetector
from fishaug.ingest.frames import FrameSelector
from fishaug.ingest.layout import VideoFile, find_videos, normalize_label
from fishaug.ingest.pipeline import PrepareResult, prepare, prepare_videos
from fishaug.ingest.video import read_frames

__all__ = [
    "AnnotationSet",
    "Box",
    "FrameSelector",
    "MotionDetector",
    "PrepareResult",
    "VideoFile",
    "find_videos",
    "load_annotations",
    "normalize_label",
    "prepare",
    "prepare_videos",
    "read_frames",
]
