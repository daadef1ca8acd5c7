"""Each dataset on disk, read through its real loader from a tiny fake tree in its exact layout:
class counts, split sizes by the spec's rule (attacks §1.3), transforms and image sizes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from modelguard.dataset.caltech256 import Caltech256
from modelguard.dataset.cifar import CIFAR10, CIFAR100
from modelguard.dataset.cub200 import CUB200
from modelguard.dataset.errors import DataError
from modelguard.dataset.imagefolder import ImageFolder
from modelguard.dataset.imagenet1k import ImageNet1k
from modelguard.dataset.indoor67 import Indoor67
from modelguard.dataset.svhn import SVHN
from modelguard.dataset.tinyimagenet200 import TinyImageNet200
from tests.dataset import fake_trees


def assert_images(split, size: int):
    """The first and last items: float [3, size, size] in [0, 1] and an int label in range."""
    for i in (0, len(split) - 1):
        x, y = split[i]
        assert x.shape == (3, size, size) and x.dtype == torch.float32
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert 0 <= y < len(split.classes) and y == int(split.targets[i])


def test_caltech256_drops_clutter_and_holds_out_25_per_class(tmp_path):
    tree = fake_trees.caltech256(tmp_path)
    source = Caltech256(str(tmp_path))
    train, test = source.split(True, "train"), source.split(False, "test")
    assert source.classes == tree["classes"] and source.num_classes == 3  # 257.clutter dropped
    counts = list(tree["counts"].values())
    assert test.class_counts().tolist() == [25] * 3
    assert train.class_counts().tolist() == [n - 25 for n in counts]
    assert not set(train.paths) & set(test.paths)
    assert all("257.clutter" not in p for p in train.paths + test.paths)
    assert_images(train, 224)
    assert_images(test, 224)


def test_imagenet1k_reads_train_only_with_an_80_20_split(tmp_path):
    tree = fake_trees.imagenet1k(tmp_path)
    source = ImageNet1k(str(tmp_path))
    train, test = source.split(True, "test"), source.split(False, "test")
    n = sum(tree["counts"].values())
    assert len(test) == int(0.2 * n) and len(train) == n - int(0.2 * n)
    assert source.classes == tree["classes"]
    assert (train.class_counts() + test.class_counts()).tolist() == list(tree["counts"].values())
    assert all("/val/" not in p for p in train.paths + test.paths)
    assert train.paths == sorted(train.paths)  # ascending indices of the ImageFolder order
    assert_images(train, 224)


def test_cub200_splits_by_the_flag_file(tmp_path):
    tree = fake_trees.cub200(tmp_path)
    source = CUB200(str(tmp_path))
    train, test = source.split(True, "train"), source.split(False, "test")
    assert (len(train), len(test)) == (tree["train"], tree["test"])
    assert source.classes == tree["classes"]
    assert_images(test, 224)


@pytest.mark.parametrize("val2", [False, True], ids=["val_annotations", "val2_folders"])
def test_tinyimagenet200_train_and_val_in_either_layout(tmp_path, val2):
    tree = fake_trees.tinyimagenet200(tmp_path, val2=val2)
    source = TinyImageNet200(str(tmp_path))
    train, test = source.split(True, "train"), source.split(False, "test")
    assert (len(train), len(test)) == (tree["train"], tree["test"])
    assert source.classes[0] == "thing number 0, other name"  # words.txt descriptions
    assert test.class_counts().tolist() == [2, 2, 2]  # labels follow the train wnid order
    assert all(p.endswith(".JPEG") for p in train.paths)  # the boxes .txt files are not images
    assert_images(train, 32)
    assert_images(test, 32)  # Resize(32) of a 64x64 image


def test_tinyimagenet200_both_val_layouts_give_the_same_labels(tmp_path):
    fake_trees.tinyimagenet200(tmp_path / "a", val2=False)
    fake_trees.tinyimagenet200(tmp_path / "b", val2=True)
    a = TinyImageNet200(str(tmp_path / "a")).split(False, None)
    b = TinyImageNet200(str(tmp_path / "b")).split(False, None)
    assert torch.equal(a.targets, b.targets)
    assert [p.rsplit("/", 1)[1] for p in a.paths] == [p.rsplit("/", 1)[1] for p in b.paths]


def test_indoor67_test_images_are_the_listed_ones(tmp_path):
    tree = fake_trees.indoor67(tmp_path)
    source = Indoor67(str(tmp_path))
    train, test = source.split(True, "train"), source.split(False, "test")
    assert (len(train), len(test)) == (tree["train"], tree["test"])
    assert test.class_counts().tolist() == [1, 1, 1]
    assert_images(train, 224)


def test_svhn_reads_mat_files_and_maps_10_to_0(tmp_path):
    arrays = fake_trees.svhn(tmp_path)
    source = SVHN(str(tmp_path))
    train, test = source.split(True, None), source.split(False, "test")
    assert (len(train), len(test)) == (12, 6) and source.num_classes == 10
    x, y = arrays["train"]
    assert np.array_equal(np.asarray(train[3][0]), x[..., 3])  # HWCN layout read per image
    assert train.targets.tolist() == [v % 10 for v in y[:, 0].tolist()] and 0 in train.targets.tolist()
    assert_images(test, 32)


@pytest.mark.parametrize("k, cls", [(10, CIFAR10), (100, CIFAR100)])
def test_cifar_binary_release(tmp_path, k, cls):
    arrays = fake_trees.cifar_binary(tmp_path, k)
    source = cls(str(tmp_path))
    train, test = source.split(True, None), source.split(False, "test")
    x, y = arrays["train"]
    assert len(train) == len(y) and len(test) == len(arrays["test"][1]) and source.num_classes == k
    assert train.targets.tolist() == y.tolist()  # CIFAR-100: the fine label, not the coarse one
    for i in (0, len(train) - 1):  # records across files, channel-major pixels
        assert np.array_equal(np.asarray(train[i][0]), x[i])
    assert source.classes[1] == "class001"
    assert_images(test, 32)
    assert_images(source.split(True, "train"), 32)


def test_cifar_image_folder_export(tmp_path):
    tree = fake_trees.cifar_folders(tmp_path)
    source = CIFAR10(str(tmp_path))
    train, test = source.split(True, "train"), source.split(False, "test")
    assert (len(train), len(test)) == (tree["train"], tree["test"]) and source.num_classes == 10
    assert_images(train, 32)


def test_cifar_binary_preferred_over_pickle(tmp_path):
    fake_trees.cifar_pickle(tmp_path)
    fake_trees.cifar_binary(tmp_path, 10)
    assert CIFAR10(str(tmp_path)).release() == "binary"


def test_imagefolder_train_test_folders(tmp_path):
    tree = fake_trees.imagefolder(tmp_path / "mine")
    source = ImageFolder(str(tmp_path), path="mine", family="cifar")
    train, test = source.split(True, "train"), source.split(False, "test")
    assert source.classes == tree["classes"]
    assert train.class_counts().tolist() == [4, 6] and test.class_counts().tolist() == [2, 2]
    assert_images(train, 32)
    absolute = ImageFolder("/elsewhere", path=str(tmp_path / "mine"))  # an absolute path ignores the root
    assert_images(absolute.split(False, "test"), 224)


def test_imagefolder_test_fraction_holds_out_per_class(tmp_path):
    fake_trees.imagefolder(tmp_path / "one", counts={"a": 10, "b": 5}, split=False)
    source = ImageFolder(str(tmp_path), path="one", test_fraction=0.2)
    train, test = source.split(True, None), source.split(False, None)
    assert test.class_counts().tolist() == [2, 1] and train.class_counts().tolist() == [8, 4]
    assert not set(train.paths) & set(test.paths)


def test_imagefolder_train_and_test_classes_must_agree(tmp_path):
    fake_trees.imagefolder(tmp_path / "mine")
    fake_trees.class_tree(tmp_path / "mine" / "test", {"birds": 1})
    with pytest.raises(DataError, match="different class folders.*birds"):
        ImageFolder(str(tmp_path), path="mine").split(False, None)


def test_splits_share_one_scan_and_views_share_storage(tmp_path):
    fake_trees.imagenet1k(tmp_path)
    source = ImageNet1k(str(tmp_path))
    plain, augmented = source.split(True, "test"), source.split(True, "train")
    assert plain.paths is augmented.paths and plain.transform is not augmented.transform
    assert torch.equal(plain.targets, augmented.targets)
    assert plain.key(0) == plain.paths[0]


def test_the_data_path_reads_imagesets(tmp_path):
    """modelguard.dataset.loading, the stages' one data path, takes an ImageSet as it is: labels
    from ``targets`` without decoding, images by index through a DataLoader."""
    from modelguard.dataset.loading import labels_of, read_batches, take
    fake_trees.cifar_binary(tmp_path, 10)
    split = CIFAR10(str(tmp_path)).split(True, "test")
    x = take(split, [4, 0, 4])
    assert x.shape == (3, 3, 32, 32) and torch.equal(x[0], x[2]) and torch.equal(x[1], split[0][0])
    assert torch.equal(labels_of(split), split.targets)
    images, labels = next(iter(read_batches(split, torch.tensor([2, 9]), batch_size=2)))
    assert torch.equal(images[1], split[9][0]) and labels.tolist() == split.targets[[2, 9]].tolist()


def test_splits_travel_to_dataloader_workers(tmp_path):
    """A DataLoader worker gets the split by pickling: the binary release's memory maps are
    reopened there, not copied, and the images come out the same."""
    import pickle

    from torch.utils.data import DataLoader
    fake_trees.cifar_binary(tmp_path, 10)
    split = CIFAR10(str(tmp_path)).split(True, "test")
    split[0]  # opens a map in this process
    assert pickle.loads(pickle.dumps(split))._maps == {} and split._maps
    batches = list(DataLoader(split, batch_size=4, num_workers=1))
    x = torch.cat([b[0] for b in batches])
    assert x.shape == (15, 3, 32, 32) and torch.equal(x[7], split[7][0])
