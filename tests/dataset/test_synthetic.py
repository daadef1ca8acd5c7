"""The synthetic dataset option: the ExperimentData contract, seeded, no files."""
from __future__ import annotations

import pytest
import torch

from modelguard.dataset.synthetic import SyntheticData


def test_contract_shapes_and_ranges():
    data = SyntheticData(num_classes=3, image_size=6, in_channels=2, train_size=30, test_size=20, pool_size=40,
                         outlier_count=10).load()
    assert (data.num_classes, data.in_channels, data.image_size) == (3, 2, 6)
    for split, n in ((data.victim_train, 30), (data.victim_test, 20), (data.query_pool, 40), (data.outliers, 10)):
        x, y = split.tensors
        assert x.shape == (n, 2, 6, 6) and len(y) == n and x.min() >= 0 and x.max() <= 1
    assert len(data.mean) == len(data.std) == 2


def test_seeded():
    a, b = SyntheticData(seed=3).load(), SyntheticData(seed=3).load()
    assert torch.equal(a.victim_train.tensors[0], b.victim_train.tensors[0])
    assert not torch.equal(a.query_pool.tensors[0], SyntheticData(seed=4).load().query_pool.tensors[0])


def test_knobs_are_validated():
    with pytest.raises(ValueError, match="dataset.num_classes=1"):
        SyntheticData(num_classes=1)
    with pytest.raises(ValueError, match="dataset.pool_train_view='rotate' is invalid.*view@dataset.pool_train_view"):
        SyntheticData(pool_train_view="rotate")
