"""Dataset options that are not in memory, for tests of the streaming data path.

``LazySynthetic`` is ``SyntheticData`` with every role behind a plain map-style ``Dataset``
(items read one by one, as from disk), so the pipeline takes its DataLoader path on the same
images. ``ProceduralData`` has a query pool of any size whose images are made on the fly from
their index: nothing holds it in memory unless the code under test does."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset, TensorDataset

from modelguard.dataset.base import ExperimentData
from modelguard.dataset.synthetic import SyntheticData


class ItemByItem(Dataset):
    """The items of a ``TensorDataset``, one ``__getitem__`` at a time, with ``targets``."""

    def __init__(self, data: TensorDataset):
        self.data = data
        self.targets = data.tensors[1].tolist() if len(data.tensors) > 1 else None
        self.reads = 0

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        self.reads += 1
        return self.data[i]


class LazySynthetic(SyntheticData):
    def load(self) -> ExperimentData:
        data = super().load()
        for role in ("victim_train", "victim_test", "query_pool", "outliers"):
            setattr(data, role, ItemByItem(getattr(data, role)))
        return data


class ProceduralPool(Dataset):
    """``size`` images of ``shape``, image i drawn from a generator seeded with i; labels i % k."""

    def __init__(self, size: int, shape: tuple[int, int, int], num_classes: int):
        self.size, self.shape = size, shape
        self.targets = [i % num_classes for i in range(size)]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int):
        image = torch.rand(self.shape, generator=torch.Generator().manual_seed(int(i)))
        return image, self.targets[i]


class ProceduralData(SyntheticData):
    """``SyntheticData`` for the victim, with a ``ProceduralPool`` of ``pool_size`` images."""

    def load(self) -> ExperimentData:
        sizes = self.sizes
        self.sizes = (sizes[0], sizes[1], 1, sizes[3])  # the in-memory pool is replaced: make it tiny
        try:
            data = super().load()
        finally:
            self.sizes = sizes
        shape = (self.in_channels, self.image_size, self.image_size)
        data.query_pool = ProceduralPool(sizes[2], shape, self.num_classes)
        return data
