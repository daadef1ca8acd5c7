"""The original's fixed train/test partitions (spec attacks §0.1, §1.3).

Both draw from a private legacy numpy RNG seeded with DS_SEED = 123, the same numbers as the
original's ``np.random.seed(123)`` (which saved and restored the global state around it), so
the same files in the same order give the original's split. They never touch a global RNG.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

DS_SEED = 123


def per_class_holdout(labels: Sequence[int], test_per_class: int | None = None, test_fraction: float | None = None,
                      seed: int = DS_SEED) -> tuple[list[int], list[int]]:
    """Caltech256's rule: for each class in index order, shuffle its sample indices (one RNG for
    all classes); the first ``test_per_class`` are test, the rest train. With ``test_fraction``
    instead, each class gives round(fraction * its size) to test (the generic image folder).
    Returns (train, test)."""
    if (test_per_class is None) == (test_fraction is None):
        raise ValueError("per_class_holdout takes exactly one of test_per_class and test_fraction")
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(index)
    rng = np.random.RandomState(seed)
    train: list[int] = []
    test: list[int] = []
    for label in sorted(by_class):
        members = by_class[label]
        rng.shuffle(members)
        n_test = test_per_class if test_per_class is not None else int(round(test_fraction * len(members)))
        test += members[:n_test]
        train += members[n_test:]
    return train, test


def fraction_holdout(count: int, test_fraction: float, seed: int = DS_SEED) -> tuple[list[int], list[int]]:
    """ImageNet1k's rule: int(test_fraction * count) indices drawn without replacement are test
    (in draw order); the others, ascending, are train. Returns (train, test)."""
    n_test = int(test_fraction * count)
    test = np.random.RandomState(seed).choice(np.arange(count), size=n_test, replace=False)
    keep = np.ones(count, dtype=bool)
    keep[test] = False
    return np.flatnonzero(keep).tolist(), test.tolist()
