"""The embedded default: MNIST-5k victim, Fashion-MNIST query pool, texture crops as outliers.

All three sources ship inside the package (see embedded/PROVENANCE.md); nothing is downloaded.
"""
from __future__ import annotations

from importlib import resources

import numpy as np
import torch
from torch.utils.data import TensorDataset

from modelguard.dataset.base import ExperimentData, to_pixels
from modelguard.dataset.transforms import IdentityView, View, check_view
from modelguard.utils.checks import check_number
from modelguard.utils.seed import make_generator

MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)


def _load(name: str) -> dict[str, np.ndarray]:
    with resources.files("modelguard.dataset").joinpath("embedded", name).open("rb") as f:
        with np.load(f, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}


def texture_crops(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` random size x size crops of the bundled textures, uint8 [count, size, size]."""
    textures = torch.from_numpy(_load("textures.npz")["images"])
    n, h, w = textures.shape
    which = torch.randint(n, (count,), generator=generator)
    top = torch.randint(h - size + 1, (count,), generator=generator)
    left = torch.randint(w - size + 1, (count,), generator=generator)
    rows = top[:, None] + torch.arange(size)[None, :]
    cols = left[:, None] + torch.arange(size)[None, :]
    return textures[which[:, None, None], rows[:, :, None], cols[:, None, :]]


class EmbeddedMNIST:
    """Victim MNIST-5k (shuffled with ``seed``, then split), queries from Fashion-MNIST.

    Args:
        test_fraction: share of the 5,000 digits held out as the victim's test set.
        pool_size: how many of the 20,000 bundled Fashion-MNIST images form the query pool.
        outlier_count: number of 28x28 texture crops in the outlier-exposure set.
        seed: shuffles the digits and places the crops.
        pool_train_view: train-time view of the query pool's family, used by attacks that
            query through the train transform (smoothing); None is ``IdentityView()``, as the
            original's MNIST family trains without augmentation.
    """

    def __init__(self, test_fraction: float = 0.2, pool_size: int = 20000, outlier_count: int = 5000,
                 seed: int = 0, pool_train_view: View | None = None):
        self.test_fraction = check_number(test_fraction, "dataset.test_fraction", low=0, high=1, low_open=True,
                                          high_open=True, fix="set dataset.test_fraction=0.2")
        self.pool_size = check_number(pool_size, "dataset.pool_size", integer=True, low=1, high=20000,
                                      note="the embedded Fashion-MNIST slice holds 20000 images",
                                      fix="set dataset.pool_size=20000")
        self.outlier_count = check_number(outlier_count, "dataset.outlier_count", integer=True, low=1,
                                          fix="set dataset.outlier_count=5000")
        self.seed = check_number(seed, "dataset.seed", integer=True, fix="set dataset.seed=${seed} (the run's seed)")
        self.pool_train_view = IdentityView() if pool_train_view is None else check_view(
            pool_train_view, "dataset.pool_train_view")

    def load(self) -> ExperimentData:
        generator = make_generator(self.seed, "dataset-embedded")
        digits = _load("mnist5k.npz")
        images = to_pixels(torch.from_numpy(digits["images"]))
        labels = torch.from_numpy(digits["labels"]).long()
        order = torch.randperm(len(labels), generator=generator)  # the file is sorted by class
        n_test = int(round(len(labels) * self.test_fraction))
        test_idx, train_idx = order[:n_test], order[n_test:]
        fashion = _load("fashion_mnist.npz")
        pool = to_pixels(torch.from_numpy(fashion["images"][: self.pool_size]))
        pool_labels = torch.from_numpy(fashion["labels"][: self.pool_size]).long()
        crops = to_pixels(texture_crops(self.outlier_count, 28, generator))
        return ExperimentData(
            name="mnist",
            num_classes=10, in_channels=1, image_size=28, mean=MNIST_MEAN, std=MNIST_STD,
            victim_train=TensorDataset(images[train_idx], labels[train_idx]),
            victim_test=TensorDataset(images[test_idx], labels[test_idx]),
            query_pool=TensorDataset(pool, pool_labels),
            outliers=TensorDataset(crops, torch.zeros(len(crops), dtype=torch.long)),
            pool_train_view=self.pool_train_view,
        )
