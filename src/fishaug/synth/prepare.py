"""The fine-tuning set: the best images per class, square crops at the model's resolution, captions.

The folder it writes::

    <label>/<rank>_<name>.png   square crops, resolution x resolution
    metadata.jsonl              one JSON object per image: file_name, text (the caption), label,
                                video, source_path, quality; the layout that the diffusers
                                examples and the `datasets` "imagefolder" loader read
    prompts.json                the caption prefix and class prompt of each class
    provenance.json             the real videos of the chosen images and the split they came from
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hydra.utils import call
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from fishaug.data.splits import SUBSETS
from fishaug.data.transforms import load_rgb
from fishaug.errors import ConfigError, DataError
from fishaug.synth.provenance import PROVENANCE_FILE, write_provenance
from fishaug.synth.quality import exposure, sharpness
from fishaug.synth.runtime import fresh_output_dir, resolve_device
from fishaug.synth.species import PROMPTS_FILE, ClassPrompts, class_prompts, write_prompts
from fishaug.training import build_datamodule

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.jsonl"
RESAMPLING = {
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
}
PAD_MODES = {"black": "constant", "edge": "edge", "reflect": "reflect"}
BOX_COLUMNS = ("x", "y", "w", "h")
BOX_MODES = ("auto", "image", "ignore")

Upscaler = Callable[[Image.Image, str, int], Image.Image]
Captioner = Callable[[Sequence[Image.Image]], list[str]]


def fish_box(
    row: Mapping[str, Any], width: int, height: int, boxes: str = "auto"
) -> tuple[float, float, float, float] | None:
    """Return the fish's box ``(x, y, w, h)`` in image pixels, or None for the whole image.

    ``boxes=image`` uses the manifest's box and requires it inside the image, and ``ignore``
    always takes the whole image. ``auto`` uses the box when it lies inside the image and the
    whole image otherwise. Some manifests (the crops of prepare.py) give the box in the pixels
    of the video frame that the crop was cut from, and such boxes fall outside the crop.

    Raises:
        DataError: with ``boxes=image``, a row has no box or one outside the image.
    """
    values = [row.get(column) for column in BOX_COLUMNS]
    if boxes == "ignore" or not all(v is not None and not pd.isna(v) for v in values):
        if boxes == "image":
            raise DataError(f"'{row['path']}' has no box (x, y, w, h); use prepare.boxes=auto.")
        return None
    x, y, w, h = (float(v) for v in values)
    inside = w > 0 and h > 0 and x >= -1 and y >= -1 and x + w <= width + 1 and y + h <= height + 1
    if not inside and boxes == "image":
        raise DataError(
            f"The box {(x, y, w, h)} of '{row['path']}' does not lie inside the "
            f"{width} x {height} image; use prepare.boxes=auto or ignore."
        )
    return (x, y, w, h) if inside else None


def square_crop(
    pixels: np.ndarray, box: tuple[float, float, float, float], margin: float, pad_mode: str
) -> np.ndarray:
    """Cut a square around ``box`` from an (H, W, 3) uint8 image; pad where it leaves the image.

    The square is centred on the box, with side ``max(w, h) * (1 + 2 * margin)``. Padding follows
    ``pad_mode``: ``black`` matches the letterbox padding of the classifier's inputs, ``edge``
    repeats the border pixels, ``reflect`` mirrors the image.
    """
    x, y, w, h = box
    side = max(1, round(max(w, h) * (1 + 2 * margin)))
    left = round(x + w / 2 - side / 2)
    top = round(y + h / 2 - side / 2)
    height, width = pixels.shape[:2]
    pad = (
        max(0, -top),
        max(0, top + side - height),
        max(0, -left),
        max(0, left + side - width),
    )
    if any(pad):
        mode = PAD_MODES[pad_mode]
        if mode == "reflect" and max(pad) >= min(height, width):
            # NOTE: numpy cannot mirror a border wider than the image, so edge padding is used instead.
            mode = "edge"
        pixels = np.pad(pixels, ((pad[0], pad[1]), (pad[2], pad[3]), (0, 0)), mode=mode)
        top += pad[0]
        left += pad[2]
    return pixels[top : top + side, left : left + side]


def score_images(
    rows: pd.DataFrame, sharpness_weight: float, exposure_weight: float, boxes: str = "auto"
) -> pd.DataFrame:
    """Add the columns ``box``, ``boxed``, ``sharpness``, ``exposure``, ``side`` and ``quality``.

    ``box`` is the fish box (x, y, w, h in pixels) and ``boxed`` tells whether it came from the
    manifest. ``side`` is the box's longer side in pixels.

    ``boxes`` chooses between manifest boxes and whole images, as in :func:`fish_box`.

    ``quality = sharpness_weight * r + exposure_weight * e``, where ``r`` is the image's sharpness
    rank within its class as a fraction in (0, 1] and ``e`` is the exposure score in [0, 1]. Both
    are measured on the fish box only, not on the background around it.

    Raises:
        DataError: an image is missing or unreadable.
    """
    measures = []
    ignored = 0
    for row in rows.to_dict("records"):
        try:
            image = load_rgb(row["path"])
        except (OSError, ValueError) as error:
            raise DataError(f"Cannot read '{row['path']}': {error}.") from error
        box = fish_box(row, *image.size, boxes=boxes)
        has_box = all(c in row and not pd.isna(row[c]) for c in BOX_COLUMNS)
        ignored += box is None and has_box and boxes == "auto"
        x, y, w, h = box if box is not None else (0.0, 0.0, *map(float, image.size))
        region = image.crop((round(x), round(y), round(x + w), round(y + h)))
        gray = np.asarray(region.convert("L"))
        if gray.size == 0:
            gray = np.asarray(image.convert("L"))
        measures.append(
            {
                "box": (x, y, w, h),
                "boxed": box is not None,
                "sharpness": sharpness(gray),
                "exposure": exposure(gray),
                "side": max(w, h),
            }
        )
    if ignored:
        log.warning(
            "%d of %d manifest boxes lie outside their image (boxes in video-frame pixels of a "
            "crop?); those images are used whole.",
            ignored,
            len(rows),
        )
    scored = pd.concat([rows.reset_index(drop=True), pd.DataFrame(measures)], axis=1)
    rank = scored.groupby("label")["sharpness"].rank(pct=True)
    scored["quality"] = sharpness_weight * rank + exposure_weight * scored["exposure"]
    return scored


def select_images(
    scored: pd.DataFrame, per_class: int | None, max_per_video: int | None, min_side: int
) -> pd.DataFrame:
    """Pick up to ``per_class`` images per class by descending quality.

    At most ``max_per_video`` come from one video, so a class is not learned from a single
    recording. Fish boxes shorter than ``min_side`` pixels are left out.

    Raises:
        DataError: a class has no image left after ``min_side``.
    """
    chosen = []
    for label, group in scored.groupby("label", sort=True):
        group = group[group["side"] >= min_side].sort_values(
            ["quality", "path"], ascending=[False, True]
        )
        if group.empty:
            raise DataError(
                f"Class '{label}' has no image whose fish box is at least "
                f"prepare.min_side={min_side} pixels; lower prepare.min_side."
            )
        picked: list[int] = []
        per_video: dict[str, int] = {}
        for index, video in zip(group.index, group["video"], strict=True):
            if per_class is not None and len(picked) >= per_class:
                break
            if max_per_video is not None and per_video.get(video, 0) >= max_per_video:
                continue
            picked.append(index)
            per_video[video] = per_video.get(video, 0) + 1
        if per_class is not None and len(picked) < per_class:
            log.warning(
                "Class '%s' has only %d usable images (of %d wanted) within "
                "prepare.max_per_video=%s and prepare.min_side=%d.",
                label,
                len(picked),
                per_class,
                max_per_video,
                min_side,
            )
        chosen.append(scored.loc[picked])
    return pd.concat(chosen, ignore_index=True)


def read_caption_file(image_path: str) -> str | None:
    """Return the text of ``<image stem>.txt`` beside the image, or None when there is none."""
    sidecar = Path(image_path).with_suffix(".txt")
    if sidecar.is_file():
        text = sidecar.read_text(encoding="utf-8").strip()
        return text or None
    return None


def build_finetune_set(
    rows: pd.DataFrame,
    output_dir: str | Path,
    prompts: Mapping[str, ClassPrompts],
    resolution: int,
    per_class: int | None = 20,
    max_per_video: int | None = None,
    min_side: int = 0,
    margin: float = 0.1,
    pad_mode: str = "black",
    boxes: str = "auto",
    resample: str = "lanczos",
    sharpness_weight: float = 0.7,
    exposure_weight: float = 0.3,
    caption_files: bool = True,
    upscaler: Upscaler | None = None,
    captioner: Captioner | None = None,
    overwrite: bool = False,
    provenance: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Choose, crop, resize and caption images of ``rows`` into ``output_dir``.

    Args:
        rows: manifest rows to choose from (the training split's); optional ``x, y, w, h``
            give the fish's box in pixels and an optional ``caption`` column adds to captions.
        prompts: the caption prefix of each label of ``rows``.
        resolution: side of the square images, pixels.
        per_class: images per class (None: all).
        margin: context around a manifest box, as a fraction of its longer side on each side;
            an image used whole gets none.
        boxes: whether the manifest's boxes are used (see :func:`fish_box`).
        upscaler: called as ``upscaler(crop, caption, resolution)`` for crops smaller than
            ``resolution``; None resizes with ``resample``.
        captioner: adds a caption to images that have no caption from the manifest or file.
        overwrite: replace an existing fine-tuning set at ``output_dir``.
        provenance: details for ``provenance.json`` (dataset, split).

    Returns the rows of ``metadata.jsonl`` as a DataFrame.

    Raises:
        ConfigError: an option is out of range, or ``output_dir`` contains something else.
        DataError: an image cannot be read, or a label has no prompts.
    """
    _check_options(resolution, per_class, max_per_video, margin, pad_mode, resample)
    if boxes not in BOX_MODES:
        raise ConfigError(f"prepare.boxes={boxes!r} is not valid; use one of {list(BOX_MODES)}.")
    missing = sorted(set(rows["label"]) - set(prompts))
    if missing:
        raise DataError(f"No caption prefix for class(es) {missing}.")
    scored = score_images(rows, sharpness_weight, exposure_weight, boxes)
    chosen = select_images(scored, per_class, max_per_video, min_side)
    # The prompts file goes in first, so a run stopped half-way leaves a folder recognised as a
    # fine-tuning set, which the next run may replace.
    output = fresh_output_dir(
        output_dir, overwrite, "prepare.output_dir", (PROVENANCE_FILE, PROMPTS_FILE)
    )
    write_prompts(output, {label: prompts[label] for label in sorted(set(chosen["label"]))})

    records = []
    images = []
    for rank, row in enumerate(chosen.to_dict("records")):
        image = load_rgb(row["path"])
        # A crop without a box is the fish already, so it gets no margin, only padding.
        context = margin if row["boxed"] else 0.0
        pixels = square_crop(np.asarray(image), row["box"], context, pad_mode)
        crop = Image.fromarray(np.ascontiguousarray(pixels))
        prefix = prompts[row["label"]].prefix
        if upscaler is not None and crop.width < resolution:
            crop = upscaler(crop, prefix, resolution)
        elif crop.size != (resolution, resolution):
            crop = crop.resize((resolution, resolution), RESAMPLING[resample])

        file_name = f"{_safe(row['label'])}/{rank:04d}_{_safe(Path(row['path']).stem)}.png"
        (output / file_name).parent.mkdir(parents=True, exist_ok=True)
        crop.save(output / file_name)
        extra = row.get("caption") if isinstance(row.get("caption"), str) else None
        if extra is None and caption_files:
            extra = read_caption_file(row["path"])
        records.append(
            {
                "file_name": file_name,
                "label": row["label"],
                "video": row["video"],
                "source_path": row["path"],
                "quality": round(float(row["quality"]), 4),
                "extra": extra,
            }
        )
        if captioner is not None:
            images.append(crop)

    if captioner is not None:
        needing = [i for i, record in enumerate(records) if not record["extra"]]
        texts = captioner([images[i] for i in needing])
        for i, text in zip(needing, texts, strict=True):
            records[i]["extra"] = text or None
        log.info("Captioned %d images automatically.", len(needing))

    for record in records:
        prefix = prompts[record["label"]].prefix
        extra = record.pop("extra")
        record["text"] = f"{prefix}, {extra}" if extra else prefix
    metadata = pd.DataFrame(records)
    with (output / METADATA_FILE).open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")
    write_provenance(output, "finetune_set", videos=metadata["video"].unique(), details=provenance)
    _log_summary(metadata, scored, output)
    return metadata


def read_finetune_set(folder: str | Path) -> pd.DataFrame:
    """Read ``metadata.jsonl`` of a fine-tuning set; ``path`` is each image's absolute path.

    Raises:
        DataError: the folder has no metadata file, it is empty, or an image is missing.
    """
    folder = Path(folder).expanduser()
    metadata = folder / METADATA_FILE
    if not metadata.is_file():
        raise DataError(
            f"'{folder}' has no {METADATA_FILE}; make the fine-tuning set with "
            "`python synth.py step=prepare` first, or point at its folder."
        )
    lines = [line for line in metadata.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise DataError(f"'{metadata}' lists no images.")
    frame = pd.DataFrame([json.loads(line) for line in lines])
    frame["path"] = [str(folder / name) for name in frame["file_name"]]
    absent = [p for p in frame["path"] if not Path(p).is_file()]
    if absent:
        raise DataError(f"{len(absent)} images of '{metadata}' are missing, e.g. '{absent[0]}'.")
    return frame


def _check_options(resolution, per_class, max_per_video, margin, pad_mode, resample) -> None:
    if resolution < 8 or resolution % 8 != 0:
        raise ConfigError(
            f"The resolution {resolution} is not valid; use a multiple of 8 (512 for SD 1.5, "
            "768 for SD 2.1-768)."
        )
    for key, value in (("prepare.per_class", per_class), ("prepare.max_per_video", max_per_video)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ConfigError(f"{key}={value!r} is out of range; use a whole number >= 1 or null.")
    if not 0 <= margin <= 2:
        raise ConfigError(f"prepare.margin={margin} is out of range; use 0 to 2.")
    if pad_mode not in PAD_MODES:
        raise ConfigError(
            f"prepare.pad_mode={pad_mode!r} is not valid; use one of {list(PAD_MODES)}."
        )
    if resample not in RESAMPLING:
        raise ConfigError(
            f"prepare.resample={resample!r} is not valid; use one of {list(RESAMPLING)}."
        )


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("_") or "image"


def _log_summary(metadata: pd.DataFrame, scored: pd.DataFrame, output: Path) -> None:
    per_class = metadata.groupby("label").agg(
        images=("file_name", "size"), videos=("video", "nunique")
    )
    candidates = scored.groupby("label").size().rename("candidates")
    log.info(
        "Fine-tuning set with %d images in %s; per class:\n%s",
        len(metadata),
        output,
        per_class.join(candidates).to_string(),
    )


def candidate_rows(cfg: DictConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Return the manifest rows to choose from and the provenance details of that choice.

    With ``prepare.subset=train`` these are the training split's rows of ``dataset`` under the
    ``data`` split settings, the same split a training run with those settings gets. With
    ``all`` they are every row of the dataset, for a second data set used only for fine-tuning.

    Raises:
        ConfigError: ``prepare.subset`` is not train or all.
    """
    subset = cfg.prepare.subset
    dataset = OmegaConf.to_container(cfg.dataset, resolve=True)
    if subset == "all":
        return call(cfg.dataset), {"dataset": dataset, "subset": "all"}
    if subset != "train":
        raise ConfigError(f"prepare.subset={subset!r} is not valid; use train or all.")

    split = build_datamodule(cfg).make_split()
    videos = {
        name: sorted(split.loc[split["subset"] == name, "video"].unique()) for name in SUBSETS
    }
    details = {
        "dataset": dataset,
        "subset": "train",
        "split": {
            key: OmegaConf.to_container(cfg.data, resolve=True).get(key)
            for key in (
                "scheme",
                "split_seed",
                "num_folds",
                "fold",
                "test_per_class",
                "test_videos",
                "val_fraction",
            )
        },
        "val_videos": videos["val"],
        "test_videos": videos["test"],
    }
    return split[split["subset"] == "train"].drop(columns="subset"), details


def run_prepare(cfg: DictConfig) -> pd.DataFrame:
    """Build the fine-tuning set that ``cfg.prepare`` describes (the ``prepare`` step)."""
    settings = cfg.prepare
    rows, details = candidate_rows(cfg)
    if settings.classes is not None:
        classes = [str(c) for c in settings.classes]
        unknown = sorted(set(classes) - set(rows["label"]))
        if unknown:
            raise ConfigError(
                f"prepare.classes names {unknown}, which have no images here; the classes are "
                f"{sorted(rows['label'].unique())}."
            )
        rows = rows[rows["label"].isin(classes)]
    prompts = class_prompts(
        rows["label"].unique(),
        cfg.caption.template,
        cfg.caption.class_template,
        OmegaConf.to_container(cfg.species, resolve=True),
    )
    device = resolve_device(settings.device, "prepare.device")

    upscaler = captioner = None
    if settings.upscaler.model is not None:
        # Imported here: diffusers takes seconds to import and most sets need no upscaler.
        from fishaug.synth.upscale import DiffusionUpscaler

        upscaler = DiffusionUpscaler(
            settings.upscaler.model,
            device,
            num_inference_steps=settings.upscaler.num_inference_steps,
            noise_level=settings.upscaler.noise_level,
            guidance_scale=settings.upscaler.guidance_scale,
            seed=cfg.seed,
            local_files_only=cfg.base.local_files_only,
        )
    if settings.auto_caption.model is not None:
        from fishaug.synth.captioning import ImageCaptioner

        captioner = ImageCaptioner(
            settings.auto_caption.model,
            device,
            max_new_tokens=settings.auto_caption.max_new_tokens,
            prompt=settings.auto_caption.prompt,
            batch_size=settings.auto_caption.batch_size,
            local_files_only=cfg.base.local_files_only,
        )

    return build_finetune_set(
        rows,
        settings.output_dir,
        prompts,
        resolution=settings.resolution,
        per_class=settings.per_class,
        max_per_video=settings.max_per_video,
        min_side=settings.min_side,
        margin=settings.margin,
        pad_mode=settings.pad_mode,
        boxes=settings.boxes,
        resample=settings.resample,
        sharpness_weight=settings.sharpness_weight,
        exposure_weight=settings.exposure_weight,
        caption_files=settings.caption_files,
        upscaler=upscaler,
        captioner=captioner,
        overwrite=settings.overwrite,
        provenance=details,
    )
