"""The view an attacker queries when it augments its queries (smoothing, spec attacks §8.1).

``attack.augment`` is None (the default, as the original): the query pool family's train
transform, a property of the dataset option (``ExperimentData.pool_train_view``: the identity
for the embedded MNIST family). Or a node naming a view class of
``modelguard.dataset.transforms``, whatever the dataset (``+view@attack.augment=shift``:
random ±4 px shifts, the project's former smoothing view).
"""
from __future__ import annotations

from modelguard.dataset.transforms import View, check_view


def check_augment(augment: View | None) -> View | None:
    return None if augment is None else check_view(augment, "attack.augment")


def query_view(augment: View | None, dataset_view: View | None) -> View:
    """``augment`` if given, else ``dataset_view`` (the dataset's train view)."""
    if augment is not None:
        return check_view(augment, "attack.augment")
    if dataset_view is None:
        raise ValueError("attack.augment=null (the dataset's train view) needs the query pool's train view: "
                         "pass dataset_view=data.pool_train_view, or name a view with +view@attack.augment=shift")
    return dataset_view
