"""The LightningDataModule: split a manifest, build datasets, samplers and loaders."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from fishaug.data import splits
from fishaug.data.manifest import check_images, validate_manifest
from fishaug.data.sampling import EpochSeededWeightedSampler, inverse_frequency_weights
from fishaug.data.transforms import ImageTransform, build_transform, channel_stats, load_rgb
from fishaug.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SCHEMES = ("video_folds", "random_split")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageDataset(Dataset):
    """Images of one subset; an item is ``(image tensor (3, S, S), class index, row index)``."""

    def __init__(
        self,
        frame: pd.DataFrame,
        class_to_idx: dict[str, int],
        transform: Callable,
    ):
        self.paths = frame["path"].tolist()
        self.targets = [class_to_idx[label] for label in frame["label"]]
        self.rows = frame.index.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        return self.transform(load_rgb(self.paths[i])), self.targets[i], self.rows[i]


class FishDataModule(L.LightningDataModule):
    """Split a manifest by whole videos and serve train/val/test loaders.

    The test set is always whole videos. ``scheme`` then picks ``video_folds`` (no video in two
    subsets; ``fold`` selects the validation fold) or ``random_split`` (a per-class random 70/30
    image split that leaks frames of a video into train and val, kept to show the effect).
    The split depends only on the manifest and ``split_seed``, not on the training seed.

    Args:
        manifest: rows with ``path``, ``label``, ``video`` (see :mod:`fishaug.data.manifest`).
        split: a saved split (``split.csv``) to reuse instead of computing one.
        normalization: ``train`` (mean/std of the training images, cached), ``imagenet``, or
            ``none`` (mean 0, std 1).
        train_augment: PIL-to-PIL augmentation applied to training images only.
        extra_train: more training rows (synthetic images), or a function that receives the
            split and returns them, so it can check them against the val and test videos.
            They join train only.
    """

    def __init__(
        self,
        manifest: pd.DataFrame,
        scheme: str = "video_folds",
        test_videos: Sequence[str] | None = None,
        test_per_class: float = 0.2,
        num_folds: int = 4,
        fold: int = 0,
        val_fraction: float = 0.3,
        split_seed: int = 0,
        image_size: int = 224,
        crop_size: int | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        balanced_sampler: bool = True,
        normalization: str = "train",
        check_images: bool = True,
        skip_bad_images: bool = False,
        cache_dir: str | None = None,
        sampler_seed: int = 0,
        split: pd.DataFrame | None = None,
        train_augment: ImageTransform | None = None,
        extra_train: pd.DataFrame | Callable[[pd.DataFrame], pd.DataFrame | None] | None = None,
    ):
        super().__init__()
        if scheme not in SCHEMES:
            raise ConfigError(f"data.scheme={scheme!r} is not valid; use one of {list(SCHEMES)}.")
        if normalization not in ("train", "imagenet", "none"):
            raise ConfigError(
                f"data.normalization={normalization!r} is not valid; "
                "use 'train', 'imagenet' or 'none'."
            )
        if batch_size < 1:
            raise ConfigError(f"data.batch_size={batch_size} is out of range; use 1 or more.")
        if num_workers < 0:
            raise ConfigError(f"data.num_workers={num_workers} is out of range; use 0 or more.")
        self.manifest = validate_manifest(manifest)
        self.scheme = scheme
        self.test_videos = list(test_videos) if test_videos is not None else None
        self.test_per_class = test_per_class
        self.num_folds = num_folds
        self.fold = fold
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.image_size = image_size
        self.crop_size = crop_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.balanced_sampler = balanced_sampler
        self.normalization = normalization
        self.check_images = check_images
        self.skip_bad_images = skip_bad_images
        self.cache_dir = cache_dir
        self.sampler_seed = sampler_seed
        self.given_split = split
        self.train_augment = train_augment
        self.extra_train = extra_train

        self.class_names: list[str] = sorted(self.manifest["label"].unique())
        self.split: pd.DataFrame | None = None
        self.mean: list[float] = [0.0, 0.0, 0.0]
        self.std: list[float] = [1.0, 1.0, 1.0]
        self.datasets: dict[str, ImageDataset] = {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.class_names)}

    def make_split(self) -> pd.DataFrame:
        """Return the manifest with a ``subset`` column in {train, val, test}."""
        if self.given_split is not None:
            split = validate_manifest(self.given_split, origin="split file")
            if "subset" not in split.columns:
                raise DataError("The split file has no 'subset' column.")
            return split

        manifest = self.manifest
        min_remaining = self.num_folds if self.scheme == "video_folds" else 1
        test_mask = splits.hold_out_test(
            manifest,
            test_videos=self.test_videos,
            test_per_class=self.test_per_class,
            seed=self.split_seed,
            min_remaining=min_remaining,
        )
        if self.scheme == "video_folds":
            subset = splits.video_folds(
                manifest, test_mask, self.num_folds, self.fold, seed=self.split_seed
            )
        else:
            subset = splits.random_split(manifest, test_mask, self.val_fraction, self.split_seed)
        return manifest.assign(subset=subset.values)

    def setup(self, stage: str | None = None) -> None:
        if self.split is not None:
            return
        split = self.make_split()
        if self.check_images:
            split = check_images(split, skip_bad=self.skip_bad_images)
        splits.check_split(
            split, self.class_names, allow_shared_videos=self.scheme == "random_split"
        )
        extra = self.extra_train(split) if callable(self.extra_train) else self.extra_train
        if extra is not None and len(extra):
            extra = validate_manifest(extra, origin="extra training rows")
            unknown = sorted(set(extra["label"]) - set(self.class_names))
            if unknown:
                raise DataError(f"Extra training rows have labels {unknown} not in the dataset.")
            split = pd.concat([split, extra.assign(subset="train")], ignore_index=True)
        self.split = split.reset_index(drop=True)
        self._log_split()

        train = self.split[self.split["subset"] == "train"]
        if self.normalization == "train":
            self.mean, self.std = channel_stats(
                train["path"].tolist(), self.image_size, self.cache_dir
            )
        elif self.normalization == "imagenet":
            self.mean, self.std = list(IMAGENET_MEAN), list(IMAGENET_STD)
        log.info("Normalisation (%s): mean %s, std %s", self.normalization, self.mean, self.std)

        for name in ("train", "val", "test"):
            transform = build_transform(
                self.image_size,
                self.mean,
                self.std,
                crop_size=self.crop_size,
                train=name == "train",
                augment=self.train_augment if name == "train" else None,
            )
            frame = self.split[self.split["subset"] == name]
            self.datasets[name] = ImageDataset(frame, self.class_to_idx, transform)

    def train_dataloader(self) -> DataLoader:
        dataset = self.datasets["train"]
        sampler = None
        if self.balanced_sampler:
            sampler = EpochSeededWeightedSampler(
                inverse_frequency_weights(dataset.targets), len(dataset), seed=self.sampler_seed
            )
        # Workers are started anew each epoch so that their seeds follow the per-epoch seeding,
        # which keeps a resumed run on the same batches as an uninterrupted one.
        return self._loader(
            dataset, self.batch_size, shuffle=sampler is None, sampler=sampler, persistent=False
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["val"], self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["test"], self.eval_batch_size)

    def subset_frame(self, name: str) -> pd.DataFrame:
        """Return the split rows of one subset, indexed as the loaders' row indices."""
        if self.split is None:
            raise RuntimeError("Call setup() before subset_frame().")
        return self.split[self.split["subset"] == name]

    def save_split(self, path: str | Path) -> None:
        """Write ``path, label, video, subset`` (plus track and source when known) to a CSV."""
        if self.split is None:
            raise RuntimeError("Call setup() before save_split().")
        columns = ["path", "label", "video", "subset"]
        columns += [c for c in ("track", "camera", "frame", "source") if c in self.split.columns]
        self.split[columns].to_csv(path, index=False)

    def _loader(
        self, dataset, batch_size, shuffle=False, sampler=None, persistent=True
    ) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=persistent and self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def _log_split(self) -> None:
        split = self.split
        counts = split.groupby(["subset", "label"]).size().unstack(fill_value=0)
        videos = split.groupby("subset")["video"].nunique()
        log.info(
            "Split scheme %s (fold %s of %s, split seed %s): videos per subset %s",
            self.scheme,
            self.fold if self.scheme == "video_folds" else "-",
            self.num_folds if self.scheme == "video_folds" else "-",
            self.split_seed,
            videos.to_dict(),
        )
        log.info("Images per subset and class:\n%s", counts.to_string())
