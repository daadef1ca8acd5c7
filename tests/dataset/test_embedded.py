"""The embedded default dataset (MNIST-5k victim, Fashion-MNIST pool, texture outliers)."""
from __future__ import annotations

import torch

from modelguard.dataset.transforms import IdentityView

from modelguard.dataset.embedded import EmbeddedMNIST


def test_embedded_splits_follow_the_knobs_and_the_seed():
    data = EmbeddedMNIST(pool_size=300, outlier_count=50, seed=0).load()
    x_train, y_train = data.victim_train.tensors
    x_test, _ = data.victim_test.tensors
    assert (data.num_classes, data.in_channels, data.image_size) == (10, 1, 28)
    assert len(x_train) + len(x_test) == 5000 and len(x_test) == 1000  # test_fraction 0.2
    assert len(data.query_pool) == 300 and len(data.outliers) == 50
    assert x_train.min() >= 0 and x_train.max() <= 1 and set(y_train.unique().tolist()) == set(range(10))
    assert isinstance(data.pool_train_view, IdentityView)
    other = EmbeddedMNIST(pool_size=300, outlier_count=50, seed=1).load()
    assert not torch.equal(other.victim_test.tensors[0], x_test)  # the seed shuffles the split
