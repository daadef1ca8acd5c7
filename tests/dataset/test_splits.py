"""The fixed DS_SEED partitions equal the original's procedure (spec attacks §0.1, §1.3): the
original seeds numpy's *global* legacy RNG with 123, shuffles per-class Python lists
(Caltech256) or draws test indices with np.random.choice (ImageNet1k). Ours use a private
RandomState and must give the same indices, without touching the global RNG."""
from __future__ import annotations

import numpy as np
import pytest

from modelguard.dataset.splits import fraction_holdout, per_class_holdout


def original_per_class(labels, n_test):
    state = np.random.get_state()
    np.random.seed(123)
    by_class = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    train, test = [], []
    for label, members in by_class.items():
        np.random.shuffle(members)
        test += members[:n_test]
        train += members[n_test:]
    np.random.set_state(state)
    return train, test


def original_fraction(count, fraction):
    state = np.random.get_state()
    np.random.seed(123)
    idxs = np.arange(count)
    test = np.random.choice(idxs, replace=False, size=int(fraction * count)).tolist()
    train = sorted(set(idxs.tolist()) - set(test))
    np.random.set_state(state)
    return train, test


@pytest.mark.parametrize("sizes", [[27, 26, 30], [80, 3, 25, 26, 41]])
def test_per_class_holdout_is_the_original_rule(sizes):
    labels = [c for c, n in enumerate(sizes) for _ in range(n)]
    assert per_class_holdout(labels, test_per_class=25) == original_per_class(labels, 25)


@pytest.mark.parametrize("count", [15, 1000, 12_345])
def test_fraction_holdout_is_the_original_rule(count):
    assert fraction_holdout(count, 0.2) == original_fraction(count, 0.2)


def test_splits_leave_the_global_rng_alone():
    np.random.seed(5)
    expected = np.random.rand()
    np.random.seed(5)
    per_class_holdout([0, 0, 1, 1], test_per_class=1)
    fraction_holdout(10, 0.2)
    assert np.random.rand() == expected


def test_per_class_holdout_takes_one_rule():
    with pytest.raises(ValueError, match="exactly one"):
        per_class_holdout([0, 1], test_per_class=1, test_fraction=0.5)
