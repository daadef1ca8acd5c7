"""Deterministic synthetic images for tests and smoke runs: no file, no download.

Each class is a fixed random prototype image; samples are prototypes plus noise, clipped to
[0, 1]. The query pool mixes prototypes of random class pairs, so it is informative but
out of distribution, like a real attacker's pool.
"""
from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from modelguard.dataset.base import ExperimentData
from modelguard.dataset.transforms import IdentityView, View, check_view
from modelguard.utils.checks import check_number
from modelguard.utils.seed import make_generator


class SyntheticData:
    def __init__(self, num_classes: int = 4, image_size: int = 8, in_channels: int = 1,
                 train_size: int = 256, test_size: int = 128, pool_size: int = 512,
                 outlier_count: int = 128, noise: float = 0.15, seed: int = 0,
                 pool_train_view: View | None = None):
        def count(value, knob: str, low: int, default: int) -> int:
            return check_number(value, f"dataset.{knob}", integer=True, low=low, fix=f"set dataset.{knob}={default}")

        self.num_classes = count(num_classes, "num_classes", 2, 4)
        self.image_size = count(image_size, "image_size", 4, 8)
        self.in_channels = count(in_channels, "in_channels", 1, 1)
        self.sizes = (count(train_size, "train_size", 1, 256), count(test_size, "test_size", 1, 128),
                      count(pool_size, "pool_size", 1, 512), count(outlier_count, "outlier_count", 1, 128))
        self.noise = check_number(noise, "dataset.noise", low=0, fix="set dataset.noise=0.15")
        self.seed = check_number(seed, "dataset.seed", integer=True, fix="set dataset.seed=${seed} (the run's seed)")
        self.pool_train_view = IdentityView() if pool_train_view is None else check_view(
            pool_train_view, "dataset.pool_train_view")

    def load(self) -> ExperimentData:
        g = make_generator(self.seed, "dataset-synthetic")
        shape = (self.in_channels, self.image_size, self.image_size)
        prototypes = torch.rand((self.num_classes, *shape), generator=g)

        def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
            y = torch.randint(self.num_classes, (n,), generator=g)
            x = prototypes[y] + self.noise * torch.randn((n, *shape), generator=g)
            return x.clamp(0, 1), y

        train_size, test_size, pool_size, outlier_count = self.sizes
        train = sample(train_size)
        test = sample(test_size)
        a = torch.randint(self.num_classes, (pool_size,), generator=g)
        b = torch.randint(self.num_classes, (pool_size,), generator=g)
        w = torch.rand((pool_size, 1, 1, 1), generator=g)
        pool = (w * prototypes[a] + (1 - w) * prototypes[b]
                + self.noise * torch.randn((pool_size, *shape), generator=g)).clamp(0, 1)
        outliers = torch.rand((outlier_count, *shape), generator=g)
        return ExperimentData(
            name="synthetic", num_classes=self.num_classes, in_channels=self.in_channels,
            image_size=self.image_size, mean=(0.5,) * self.in_channels, std=(0.25,) * self.in_channels,
            victim_train=TensorDataset(*train), victim_test=TensorDataset(*test),
            query_pool=TensorDataset(pool, a), outliers=TensorDataset(outliers, torch.zeros(outlier_count, dtype=torch.long)),
            pool_train_view=self.pool_train_view,
        )
