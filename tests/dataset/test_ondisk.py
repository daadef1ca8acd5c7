"""The dataset options on disk, composed from conf/ as a run does: each paper victim with its
pool and outlier set, members overridable, the ExperimentData roles with their transforms,
and the fail-fast checks of load()."""
from __future__ import annotations

import time

import pytest
import torch
from hydra.utils import instantiate

from modelguard.dataset.base import ExperimentData
from modelguard.dataset.errors import DataError
from modelguard.dataset.families import CIFAR_MEAN, IMAGENET_MEAN
from modelguard.dataset.images import ImageSet
from modelguard.dataset.ondisk import OnDiskData
from modelguard.dataset.transforms import ShiftFlipView
from modelguard.stages.common import build_model
from tests.dataset import fake_trees


def cifar_triple(root):
    fake_trees.cifar_binary(root, 10)
    fake_trees.tinyimagenet200(root)
    fake_trees.svhn(root)


def imagenet_triple(root):
    fake_trees.caltech256(root)
    fake_trees.imagenet1k(root)
    fake_trees.indoor67(root)


def load(compose_cfg, *overrides):
    return instantiate(compose_cfg(*overrides).dataset).load()


@pytest.mark.parametrize("victim, pool, outliers", [
    ("cifar10", "tinyimagenet200", "svhn"), ("cifar100", "tinyimagenet200", "svhn"),
    ("caltech256", "imagenet1k", "indoor67"), ("cub200", "imagenet1k", "indoor67"),
    ("imagefolder", "imagenet1k", "indoor67")])
def test_each_victim_composes_its_paper_triple(compose_cfg, victim, pool, outliers):
    cfg = compose_cfg(f"dataset={victim}", "paths.data_dir=/nowhere")
    assert cfg.dataset.victim.root == "/nowhere"  # paths.data_dir reaches every member
    data = instantiate(cfg.dataset)  # constructing reads nothing
    assert isinstance(data, OnDiskData)
    assert [type(m).name for m in data.members.values()] == [victim, pool, outliers]


def test_cifar10_roles_transforms_and_sizes(compose_cfg, tmp_path):
    cifar_triple(tmp_path)
    data = load(compose_cfg, "dataset=cifar10", f"paths.data_dir={tmp_path}")
    assert isinstance(data, ExperimentData)
    assert (data.name, data.num_classes, data.in_channels, data.image_size) == ("cifar10", 10, 3, 32)
    assert data.mean == CIFAR_MEAN and data.family == "cifar" and data.pool_family == "tinyimagenet"
    assert (len(data.victim_train), len(data.victim_test), len(data.query_pool), len(data.outliers)) == (15, 4, 12, 12)
    assert (len(data.pool_test), len(data.outliers_test)) == (6, 6)
    assert isinstance(data.pool_train_view, ShiftFlipView)
    for split in (data.victim_train, data.victim_test, data.query_pool, data.pool_augmented, data.outliers):
        assert isinstance(split, ImageSet) and split[0][0].shape == (3, 32, 32)
    # The pool's two views: the same images and labels, test (deterministic) and train (random) transforms.
    assert torch.equal(data.query_pool.targets, data.pool_augmented.targets)
    assert torch.equal(data.query_pool[5][0], data.query_pool[5][0])
    torch.manual_seed(0)
    assert any(not torch.equal(data.query_pool[5][0], data.pool_augmented[5][0]) for _ in range(5))
    model = build_model(compose_cfg("arch=vgg16_bn"), data)  # the CIFAR victims' arch
    assert model(data.victim_test[0][0][None]).shape == (1, 10)


def test_caltech256_roles_at_224px(compose_cfg, tmp_path):
    imagenet_triple(tmp_path)
    data = load(compose_cfg, "dataset=caltech256", f"paths.data_dir={tmp_path}")
    assert (data.num_classes, data.image_size, data.mean) == (3, 224, IMAGENET_MEAN)
    assert len(data.victim_test) == 75 and len(data.query_pool) == 18 - int(0.2 * 18)
    assert data.query_pool[0][0].shape == data.outliers[0][0].shape == (3, 224, 224)


def test_members_are_overridable(compose_cfg, tmp_path):
    cifar_triple(tmp_path)
    fake_trees.imagefolder(tmp_path / "mypool", size=(32, 32))
    data = load(compose_cfg, "dataset=cifar10", f"paths.data_dir={tmp_path}", "dataset/pool=imagefolder",
                "dataset.pool.path=mypool", "dataset.pool.family=cifar")
    assert len(data.query_pool) == 10 and data.pool_family == "cifar"
    assert data.query_pool.key(0).startswith(str(tmp_path / "mypool" / "train"))


def test_imagefolder_pool_needs_a_path(compose_cfg):
    from omegaconf.errors import MissingMandatoryValue
    cfg = compose_cfg("dataset=cifar10", "dataset/pool=imagefolder")
    with pytest.raises(Exception) as err:
        instantiate(cfg.dataset)
    assert isinstance(err.value, MissingMandatoryValue) or "dataset.pool.path" in str(err.value)


def test_pool_of_another_size_is_refused(compose_cfg, tmp_path):
    cifar_triple(tmp_path)
    fake_trees.imagenet1k(tmp_path)
    with pytest.raises(DataError, match=r"dataset.pool \(imagenet1k, imagenet family, 224 px\) does not fit "
                                        r"the victim \(cifar10, cifar family, 32 px\)"):
        load(compose_cfg, "dataset=cifar10", f"paths.data_dir={tmp_path}", "dataset/pool=imagenet1k")


def test_missing_member_fails_fast_naming_its_role(compose_cfg, tmp_path):
    fake_trees.cifar_binary(tmp_path, 10)
    fake_trees.svhn(tmp_path)
    start = time.perf_counter()
    with pytest.raises(DataError) as err:
        load(compose_cfg, "dataset=cifar10", f"paths.data_dir={tmp_path}")
    assert time.perf_counter() - start < 2.0
    assert str(err.value).startswith("dataset.pool: dataset tinyimagenet200: the folder tiny-imagenet-200/train not found")


def test_corrupt_first_image_stops_load(compose_cfg, tmp_path):
    imagenet_triple(tmp_path)
    cfg = compose_cfg("dataset=caltech256", f"paths.data_dir={tmp_path}")
    first = instantiate(cfg.dataset).members["victim"].split(True, None).paths[0]
    fake_trees.corrupt(__import__("pathlib").Path(first))
    with pytest.raises(DataError, match=f"cannot read image {first}"):
        instantiate(cfg.dataset).load()


def test_missing_data_is_a_user_error_of_the_run(compose_cfg, tmp_path):
    """A run on a missing data root raises a DataError before any stage and writes no victim;
    the command line prints its own message (a user error, not an "unexpected" one) with exit code 2."""
    from modelguard.errors import explain
    from modelguard.run import run_experiment
    cfg = compose_cfg("dataset=cifar10", f"paths.data_dir={tmp_path / 'none'}", "stages=[victim]")
    with pytest.raises(DataError, match="does not exist") as raised:
        run_experiment(cfg)
    assert not explain(raised.value).startswith("unexpected")
    assert not list((tmp_path / "cache").rglob("victim.pt"))


def test_bundle_takes_sources_only(tmp_path):
    from modelguard.dataset.cifar import CIFAR10
    from modelguard.dataset.svhn import SVHN
    with pytest.raises(ValueError, match="dataset.pool must be a dataset on disk"):
        OnDiskData(victim=CIFAR10(str(tmp_path)), pool="imagenet1k", outliers=SVHN(str(tmp_path)))


def _pipeline(compose_cfg, tmp_path, *overrides):
    from modelguard.run import run_experiment
    cfg = compose_cfg(*overrides, f"paths.data_dir={tmp_path / 'data'}", "debug=fast", "progress=false")
    return run_experiment(cfg, {"dataset": cfg.dataset.victim._target_.rsplit(".", 1)[1]})


def test_pipeline_runs_on_a_32px_fixture_tree(compose_cfg, tmp_path):
    """The four stages on CIFAR-10 / TinyImageNet / SVHN fixtures, read through the stages' data path."""
    root = tmp_path / "data"
    fake_trees.cifar_binary(root, 10, per_file=6, test=10)
    fake_trees.tinyimagenet200(root, per_class=10)
    fake_trees.svhn(root)
    record = _pipeline(compose_cfg, tmp_path, "dataset=cifar10", "arch=alexnet", "attack.budget=20")
    assert record["queries"] == 20 and record["query/transfer_size"] == 20
    assert 0.0 <= record["surrogate/test_acc"] <= 1.0 and "victim/test_acc" in record


@pytest.mark.slow
def test_pipeline_runs_on_a_224px_fixture_tree(compose_cfg, tmp_path):
    """The imagenet family end to end (CUB-200 / ImageNet1k / Indoor67 fixtures, 224 px)."""
    root = tmp_path / "data"
    fake_trees.cub200(root, counts={"001.a": 4, "002.b": 4})
    fake_trees.imagenet1k(root)
    fake_trees.indoor67(root)
    record = _pipeline(compose_cfg, tmp_path, "dataset=cub200", "arch=resnet18", "arch.small_input_stem=false",
                       "attack.budget=12", "victim.batch_size=4", "substitute.batch_size=4")
    assert record["queries"] == 12 and 0.0 <= record["surrogate/test_acc"] <= 1.0
