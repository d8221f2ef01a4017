"""The public FishCam-AT sample of fish-pass camera crops (Kratzert and Mader, EGU 2017).

Layout: ``<root>/data/<species>/<date>_<time>_<hex>_<camera>_<track>_frame<K>.png`` where
``<track>`` is ``fish<N>`` or ``nofish<N>``. One video is one recording
(``<date>_<time>_<hex>_<camera>``); one track is one fish in it.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pandas as pd

from fishaug.data.manifest import validate_manifest
from fishaug.errors import DataError

log = logging.getLogger(__name__)

FILE_NAME = re.compile(
    r"^(?P<video>(?P<date>\d{8})_(?P<time>\d{6})_(?P<id>[0-9A-Fa-f]{4})_(?P<camera>[0-9A-Fa-f]{12}))"
    r"_(?P<track>(?:no)?fish\d+)_frame(?P<frame>\d+)\.png$"
)
SPECIES = ("bream", "browntrout", "burbot", "chub", "nase", "perch", "rainbowtrout")


def parse_file_name(name: str) -> dict[str, str | int]:
    """Split a FishCam-AT file name into video, camera, track and frame.

    Raises:
        DataError: the name does not follow ``<date>_<time>_<hex>_<camera>_fish<N>_frame<K>.png``.
    """
    match = FILE_NAME.match(name)
    if match is None:
        raise DataError(
            f"'{name}' is not a FishCam-AT file name "
            "(<date>_<time>_<hex>_<camera>_fish<N>_frame<K>.png)."
        )
    return {
        "video": match["video"],
        "camera": match["camera"],
        "track": match["track"],
        "frame": int(match["frame"]),
    }


def fishcam_source(
    root: str,
    download: bool = False,
    url: str | None = None,
    min_images: int = 1,
) -> pd.DataFrame:
    """Build the manifest of a FishCam-AT copy, downloading the sample first when asked.

    Args:
        root: the sample's folder (the one holding ``data/``) or its ``data/`` folder itself.
        download: fetch the repository archive from ``url`` when ``root`` has no images.
        url: address of the repository's zip archive.
        min_images: fewer images than this means an incomplete copy.

    Raises:
        DataError: no sample at ``root`` and no download asked for, the download failed, or
            the copy is incomplete or contains a file name that does not parse.
    """
    data_dir = _find_data_dir(Path(root).expanduser())
    if data_dir is None:
        if not download:
            raise DataError(
                f"No FishCam-AT sample at dataset.root='{root}' (expected "
                "<root>/data/<species>/*.png). Point dataset.root at a copy, or set "
                "dataset.download=true on a machine with internet access."
            )
        _download(url, Path(root).expanduser())
        data_dir = _find_data_dir(Path(root).expanduser())
        if data_dir is None:
            raise DataError(f"The archive from {url} has no data/<species>/*.png folders.")

    rows = []
    for species_dir in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        for image in sorted(species_dir.glob("*.png")):
            rows.append(
                {"path": str(image), "label": species_dir.name, **parse_file_name(image.name)}
            )
    if len(rows) < min_images:
        raise DataError(
            f"The FishCam-AT copy at '{data_dir}' has {len(rows)} images, fewer than "
            f"dataset.min_images={min_images}; it looks incomplete. Delete it and download again."
        )
    labels = sorted({row["label"] for row in rows})
    unknown = sorted(set(labels) - set(SPECIES))
    if unknown:
        log.warning("FishCam-AT copy has species folders beyond the published seven: %s", unknown)
    return validate_manifest(pd.DataFrame(rows), origin=f"FishCam-AT sample '{data_dir}'")


def _find_data_dir(root: Path) -> Path | None:
    for candidate in (root / "data", root):
        if candidate.is_dir() and any(candidate.glob("*/*.png")):
            return candidate
    return None


def _download(url: str | None, root: Path) -> None:
    if not url:
        raise DataError("dataset.download=true needs dataset.url, the sample's zip archive.")
    log.info("Downloading the FishCam-AT sample from %s", url)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "fishcam.zip"
        try:
            with urllib.request.urlopen(url, timeout=60) as response, archive.open("wb") as out:
                shutil.copyfileobj(response, out)
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            raise DataError(
                f"Could not download the FishCam-AT sample from {url}: {error}. Download the "
                f"archive by hand and unpack it so that '{root}/data/<species>/' exists."
            ) from error
        try:
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(tmp)
        except zipfile.BadZipFile as error:
            raise DataError(f"The file downloaded from {url} is not a zip archive.") from error
        extracted = next((p.parent for p in Path(tmp).glob("*/data") if p.is_dir()), None)
        if extracted is None:
            raise DataError(f"The archive from {url} has no data/ folder.")
        root.mkdir(parents=True, exist_ok=True)
        shutil.copytree(extracted, root, dirs_exist_ok=True)
    log.info("FishCam-AT sample unpacked into %s", root)
