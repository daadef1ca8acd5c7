"""A victim / query pool / outlier-set triple read from disk, behind the ExperimentData contract.

``OnDiskData(victim, pool, outliers).load()`` returns ``OnDiskExperimentData``: the
``ExperimentData`` roles as map-style datasets that decode images lazily (``ImageSet``), with
the transforms the original uses for each role (spec attacks §4, §6, §8):

| role | split | transform |
|---|---|---|
| ``victim_train`` | victim train | victim family, train |
| ``victim_test`` | victim test | victim family, test |
| ``query_pool`` | pool train | pool family, test (what the attacker queries and trains on) |
| ``pool_augmented`` | pool train, same indices | pool family, train (smoothing's per-image view) |
| ``pool_test`` | pool test | pool family, test (the shadow models' test split) |
| ``outliers`` | outlier-set train | its family, train |
| ``outliers_test`` | outlier-set test | its family, test |

``load()`` fails fast, before any stage works: each member's layout is checked, the three
families must give one image size, and the first image of every split is decoded, so a
missing tree or an unreadable file stops the run in seconds with a ``DataError``.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset

from modelguard.dataset.base import ExperimentData
from modelguard.dataset.errors import DataError
from modelguard.dataset.source import ImageSource
from modelguard.dataset.transforms import ShiftFlipView, View, check_view


@dataclass
class OnDiskExperimentData(ExperimentData):
    """ExperimentData whose roles are ``ImageSet``s (``ds[i]``, ``ds.targets``, ``ds.key(i)``)."""
    pool_augmented: Dataset | None = None
    pool_test: Dataset | None = None
    outliers_test: Dataset | None = None
    family: str = ""
    pool_family: str = ""


class OnDiskData:
    """The ``dataset`` option for data on disk: three ``ImageSource`` members.

    Args:
        victim, pool, outliers: the members (X_t, X_q, X_OE), each an ``ImageSource``
            (conf/dataset/{victim,pool,outliers}/*.yaml).
        pool_train_view: the batched train view of the pool images (ExperimentData.pool_train_view);
            None: ``ShiftFlipView``, the cifar and tinyimagenet families' crop-with-padding-4 and
            flip. Smoothing queries ``pool_augmented`` instead (the per-image train transform,
            RandomResizedCrop for the imagenet family), unless ``attack.augment`` names a view.
    """

    def __init__(self, victim: ImageSource, pool: ImageSource, outliers: ImageSource,
                 pool_train_view: View | None = None):
        self.members = {"victim": victim, "pool": pool, "outliers": outliers}
        for role, member in self.members.items():
            if not isinstance(member, ImageSource):
                raise ValueError(f"dataset.{role} must be a dataset on disk (an ImageSource, "
                                 f"conf/dataset/{role}/*.yaml), got {type(member).__name__}")
        self.pool_train_view = ShiftFlipView() if pool_train_view is None else check_view(
            pool_train_view, "dataset.pool_train_view")

    def check(self) -> None:
        """Every member's layout, and one image size for the three (DataError otherwise)."""
        for role, member in self.members.items():
            with _role(role):
                member.check()
        victim = self.members["victim"]
        for role in ("pool", "outliers"):
            other = self.members[role]
            if other.family.size != victim.family.size:
                raise DataError(f"dataset.{role} ({other.name}, {other.family.name} family, {other.family.size} px) "
                                f"does not fit the victim ({victim.name}, {victim.family.name} family, "
                                f"{victim.family.size} px): choose a {role} of the victim's size, or set "
                                f"dataset.{role}.family to a {victim.family.size} px family")

    def load(self) -> OnDiskExperimentData:
        self.check()
        victim, pool, outliers = (self.members[r] for r in ("victim", "pool", "outliers"))
        with _role("victim"):
            victim_train, victim_test = victim.split(True, "train"), victim.split(False, "test")
        with _role("pool"):
            query_pool, pool_test = pool.split(True, "test"), pool.split(False, "test")
        with _role("outliers"):
            oe_train, oe_test = outliers.split(True, "train"), outliers.split(False, "test")
        splits = {"victim train": victim_train, "victim test": victim_test, "pool train": query_pool,
                  "outliers train": oe_train}
        for what, split in splits.items():
            if len(split) == 0:
                raise DataError(f"dataset: the {what} split of {split.name} is empty")
            split[0]  # decode one image now: an unreadable tree fails here, not hours into a stage
        return OnDiskExperimentData(
            name=victim.name, num_classes=victim.num_classes, in_channels=3, image_size=victim.family.size,
            mean=victim.family.mean, std=victim.family.std,
            victim_train=victim_train, victim_test=victim_test, query_pool=query_pool, outliers=oe_train,
            pool_train_view=self.pool_train_view,
            pool_augmented=pool.split(True, "train"), pool_test=pool_test, outliers_test=oe_test,
            family=victim.family.name, pool_family=pool.family.name,
        )


class _role:
    """Prefix a member's DataError with its role (``dataset.pool: ...``), the config key to fix."""

    def __init__(self, role: str):
        self.role = role

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if isinstance(err, DataError) and not str(err).startswith("dataset."):
            raise DataError(f"dataset.{self.role}: {err}") from err
        return False
