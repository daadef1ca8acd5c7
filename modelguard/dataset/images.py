"""Map-style datasets that read images lazily from disk (the streaming counterpart of TensorDataset).

Every split is an ``ImageSet``: ``ds[i]`` decodes image i and returns ``(transform(image),
label)``; ``ds.targets`` holds all labels as a tensor without decoding any image (what shadow
planning and class counts need); ``ds.key(i)`` names where image i lives (a file, or a file
and record number), the storage key the original keeps in its transfer set;
``ds.with_transform(t)`` is the same images under another transform (the pool's test and
train views share one file list). Nothing is decoded until an item is asked for, so a
split of a million files costs its file list only. The stages read them batch by batch
through modelguard.dataset.loading (a DataLoader; ``labels_of`` reads ``targets``).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from modelguard.dataset.errors import DataError, image_error

# What a broken or non-image file raises inside PIL (truncated data, unknown format, bad header).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class ImageSet(Dataset):
    """A labelled split of RGB images; subclasses say how image i is read (``image``) and named (``key``)."""

    def __init__(self, name: str, targets: Sequence[int] | np.ndarray | torch.Tensor, classes: Sequence[str],
                 transform: Callable | None = None):
        self.name = name
        self.targets = torch.as_tensor(np.asarray(targets, dtype=np.int64))
        self.classes = list(classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def image(self, index: int) -> Image.Image:
        raise NotImplementedError

    def key(self, index: int) -> str:
        raise NotImplementedError

    def __getitem__(self, index: int):
        image = self.image(int(index))
        return (self.transform(image) if self.transform is not None else image), int(self.targets[index])

    def with_transform(self, transform: Callable | None) -> "ImageSet":
        """The same images and labels under ``transform`` (storage shared, nothing re-read)."""
        other = copy.copy(self)
        other.transform = transform
        return other

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.targets, minlength=len(self.classes))


class FileImages(ImageSet):
    """One image file per sample (the image-folder datasets)."""

    def __init__(self, name: str, paths: Sequence[str | Path], targets, classes, transform=None):
        super().__init__(name, targets, classes, transform)
        self.paths = [str(p) for p in paths]
        if len(self.paths) != len(self.targets):
            raise ValueError(f"dataset {name}: {len(self.paths)} paths but {len(self.targets)} labels")

    def image(self, index: int) -> Image.Image:
        path = self.paths[index]
        try:
            with Image.open(path) as im:
                return im.convert("RGB")  # convert() decodes now, inside the try
        except _DECODE_ERRORS as err:
            raise image_error(self.name, path, err) from err

    def key(self, index: int) -> str:
        return self.paths[index]


class ArrayImages(ImageSet):
    """Images held in one uint8 array, ``[N, H, W, 3]`` or, as SVHN's .mat files, ``[H, W, 3, N]``."""

    def __init__(self, name: str, array: np.ndarray, targets, classes, transform=None, *,
                 sample_axis: int = 0, source: str = ""):
        super().__init__(name, targets, classes, transform)
        if sample_axis not in (0, 3) or array.ndim != 4 or array.dtype != np.uint8:
            raise ValueError(f"dataset {name}: expected a uint8 [N, H, W, 3] or [H, W, 3, N] array, "
                             f"got {array.dtype} {array.shape}")
        if array.shape[sample_axis] != len(self.targets):
            raise DataError(f"dataset {name}: {source or 'the array'} holds {array.shape[sample_axis]} images "
                            f"but {len(self.targets)} labels")
        self.array = array
        self.sample_axis = sample_axis
        self.source = source

    def image(self, index: int) -> Image.Image:
        pixels = self.array[index] if self.sample_axis == 0 else self.array[..., index]
        return Image.fromarray(np.ascontiguousarray(pixels))

    def key(self, index: int) -> str:
        return f"{self.source}#{index}"


class RecordImages(ImageSet):
    """Fixed-size binary records (the CIFAR binary release): ``label_bytes`` label bytes, then a
    3x32x32 image, channel-major. Files are memory-mapped when first read in each process, so
    the split costs its labels only, and a DataLoader worker never receives a mapped file."""

    IMAGE_BYTES = 3 * 32 * 32

    def __init__(self, name: str, files: Sequence[Path], label_bytes: int, label_index: int, classes,
                 transform=None):
        self.files = [Path(f) for f in files]
        self.record = label_bytes + self.IMAGE_BYTES
        labels = []
        for f in self.files:
            size = f.stat().st_size
            if size == 0 or size % self.record:
                raise DataError(f"dataset {name}: {f} is {size} bytes, not a whole number of {self.record}-byte "
                                "records: the file is truncated or not from the binary release; download it again")
            labels.append(np.array(np.memmap(f, np.uint8, "r", shape=(size // self.record, self.record))[:, label_index]))
        self.ends = np.cumsum([len(x) for x in labels])
        targets = np.concatenate(labels)
        if targets.max(initial=0) >= len(classes):
            raise DataError(f"dataset {name}: label {int(targets.max())} in {self.files} exceeds its "
                            f"{len(classes)} classes: these are not this dataset's binary files")
        super().__init__(name, targets, classes, transform)
        self._maps: dict[int, np.memmap] = {}

    def _locate(self, index: int) -> tuple[int, int]:
        f = int(np.searchsorted(self.ends, index, side="right"))
        return f, index - (int(self.ends[f - 1]) if f else 0)

    def image(self, index: int) -> Image.Image:
        f, row = self._locate(index)
        if f not in self._maps:
            n = int(self.ends[f] - (self.ends[f - 1] if f else 0))
            self._maps[f] = np.memmap(self.files[f], np.uint8, "r", shape=(n, self.record))
        pixels = np.asarray(self._maps[f][row, self.record - self.IMAGE_BYTES:]).reshape(3, 32, 32)
        return Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)))

    def key(self, index: int) -> str:
        f, row = self._locate(index)
        return f"{self.files[f]}#{row}"

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_maps"] = {}  # reopen in the receiving process instead of copying mapped bytes
        return state

    def with_transform(self, transform):
        other = super().with_transform(transform)
        other._maps = {}
        return other
