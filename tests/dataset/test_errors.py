"""Missing or malformed data stops at once with one DataError naming the dataset, the path looked
in, the expected layout and where the data comes from (issue 10 item 6); a corrupt image names
the file; nothing is written."""
from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import pytest

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

SOURCES = {
    "cifar10": (CIFAR10, {}, "cifar10", "cs.toronto.edu"),
    "cifar100": (CIFAR100, {}, "cifar100", "cs.toronto.edu"),
    "svhn": (SVHN, {}, "svhn", "ufldl.stanford.edu"),
    "caltech256": (Caltech256, {}, "256_ObjectCategories", "data.caltech.edu"),
    "cub200": (CUB200, {}, "CUB_200_2011", "cub_200_2011"),
    "imagenet1k": (ImageNet1k, {}, "ILSVRC2012", "image-net.org"),
    "tinyimagenet200": (TinyImageNet200, {}, "tiny-imagenet-200", "tiny-imagenet-200.zip"),
    "indoor67": (Indoor67, {}, "indoor", "web.mit.edu/torralba"),
    "imagefolder": (ImageFolder, {"path": "mine"}, "mine", "your own images"),
}


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("name", SOURCES)
@pytest.mark.parametrize("root_exists", [True, False], ids=["empty_root", "no_root"])
def test_missing_data_names_dataset_path_layout_and_source(tmp_path, name, root_exists):
    cls, kwargs, folder, source = SOURCES[name]
    root = tmp_path / "data"
    if root_exists:
        root.mkdir()
    before = listing(tmp_path)
    start = time.perf_counter()
    with pytest.raises(DataError) as err:
        cls(str(root), **kwargs).split(True, "train")
    assert time.perf_counter() - start < 2.0
    message = str(err.value)
    assert message.startswith(f"dataset {cls.name}:")
    assert f"looked in: {root / folder}" in message
    assert cls.layout[0] in message and "expected layout:" in message
    assert "get it from:" in message and source in message
    assert ("does not exist" in message) == (not root_exists)
    assert listing(tmp_path) == before  # nothing written, nothing downloaded


def test_wrong_layouts_say_what_is_wrong(tmp_path):
    cases = []
    (tmp_path / "a" / "256_ObjectCategories").mkdir(parents=True)
    cases.append((Caltech256(str(tmp_path / "a")), "no class folders"))
    (tmp_path / "b" / "256_ObjectCategories" / "001.ak47").mkdir(parents=True)
    cases.append((Caltech256(str(tmp_path / "b")), "class folder 001.ak47 holds no images"))
    fake_trees.class_tree(tmp_path / "c" / "ILSVRC2012" / "val", {"n0": 1})
    cases.append((ImageNet1k(str(tmp_path / "c")), "ILSVRC2012/train not found"))
    fake_trees.cub200(tmp_path / "d")
    (tmp_path / "d" / "CUB_200_2011" / "train_test_split.txt").unlink()
    cases.append((CUB200(str(tmp_path / "d")), "train_test_split.txt not found"))
    fake_trees.tinyimagenet200(tmp_path / "e")
    (tmp_path / "e" / "tiny-imagenet-200" / "val" / "val_annotations.txt").unlink()
    cases.append((TinyImageNet200(str(tmp_path / "e")), "no test split"))
    fake_trees.imagefolder(tmp_path / "f" / "mine")
    os.rename(tmp_path / "f" / "mine" / "test", tmp_path / "f" / "mine" / "val")
    cases.append((ImageFolder(str(tmp_path / "f"), path="mine"), "the folder test/ not found"))
    fake_trees.cifar_folders(tmp_path / "g", train_per_class=1)
    for c in ("class007", "class008", "class009"):
        for p in (tmp_path / "g" / "cifar10" / "train" / c).iterdir():
            p.unlink()
        (tmp_path / "g" / "cifar10" / "train" / c).rmdir()
    cases.append((CIFAR10(str(tmp_path / "g")), "train/ holds 7 class folders, not 10"))
    for source, expected in cases:
        with pytest.raises(DataError, match=expected):
            source.split(True, None)


def test_malformed_list_files_name_the_line(tmp_path):
    fake_trees.cub200(tmp_path)
    listed = tmp_path / "CUB_200_2011" / "images.txt"
    listed.write_text(listed.read_text().replace("2 ", "2\n", 1))
    with pytest.raises(DataError, match="line 2 of images.txt"):
        CUB200(str(tmp_path)).split(True, None)


def test_cub200_image_without_a_flag_is_named(tmp_path):
    fake_trees.cub200(tmp_path)
    stray = fake_trees.class_tree(tmp_path / "CUB_200_2011" / "images", {"001.Black_footed_Albatross": 1}, ext=".png")
    with pytest.raises(DataError, match=f"have no train/test flag, e.g. {stray[0]}"):
        CUB200(str(tmp_path)).split(True, None)


def test_tinyimagenet_annotation_of_an_unknown_class(tmp_path):
    fake_trees.tinyimagenet200(tmp_path)
    annotations = tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    annotations.write_text(annotations.read_text().replace("n01629819", "n99999999", 1))
    with pytest.raises(DataError, match="names n99999999, not a train class"):
        TinyImageNet200(str(tmp_path)).split(False, None)


def test_indoor67_test_list_matching_nothing(tmp_path):
    fake_trees.indoor67(tmp_path)
    (tmp_path / "indoor" / "TestImages.txt").write_text("Images/kitchen/not_there.jpg\n")
    with pytest.raises(DataError, match="no file listed in TestImages.txt exists"):
        Indoor67(str(tmp_path)).split(True, None)


def test_svhn_unreadable_mat_file(tmp_path):
    (tmp_path / "svhn").mkdir()
    (tmp_path / "svhn" / "train_32x32.mat").write_bytes(b"not a matlab file at all" * 10)
    with pytest.raises(DataError, match="train_32x32.mat is not a readable SVHN .mat file"):
        SVHN(str(tmp_path)).split(True, None)


def test_cifar_truncated_binary_file(tmp_path):
    fake_trees.cifar_binary(tmp_path, 10)
    batch = tmp_path / "cifar10" / "cifar-10-batches-bin" / "data_batch_3.bin"
    batch.write_bytes(batch.read_bytes()[:-10])
    with pytest.raises(DataError, match="data_batch_3.bin is .* not a whole number of 3073-byte records"):
        CIFAR10(str(tmp_path)).split(True, None)


def test_cifar10_files_holding_other_records(tmp_path):
    fake_trees.cifar_binary(tmp_path, 10)
    batch = tmp_path / "cifar10" / "cifar-10-batches-bin" / "data_batch_1.bin"
    records = bytearray(batch.read_bytes())
    records[0] = 57  # a label CIFAR-10 does not have
    batch.write_bytes(bytes(records))
    with pytest.raises(DataError, match="label 57 .* exceeds its 10 classes"):
        CIFAR10(str(tmp_path)).split(True, None)
    batch.write_bytes(bytes(3074 * 3))  # CIFAR-100's 2-label-byte records
    with pytest.raises(DataError, match="not a whole number of 3073-byte records"):
        CIFAR10(str(tmp_path)).split(True, None)


@pytest.mark.parametrize("builder, source", [
    (fake_trees.caltech256, lambda root: Caltech256(root)),
    (fake_trees.imagenet1k, lambda root: ImageNet1k(root)),
    (lambda root: fake_trees.imagefolder(root / "mine"), lambda root: ImageFolder(root, path="mine")),
])
def test_corrupt_image_names_the_file(tmp_path, builder, source):
    builder(tmp_path)
    split = source(str(tmp_path)).split(True, "train")
    bad = fake_trees.corrupt(Path(split.paths[1]))
    split[0]  # its neighbours still read
    with pytest.raises(DataError, match=f"cannot read image {bad}.*replace it from the original archive or delete it"):
        split[1]


def test_pickle_release_is_refused_without_the_knob(tmp_path):
    fake_trees.cifar_pickle(tmp_path)
    with pytest.raises(DataError, match="allow_pickle_release=true"):
        CIFAR10(str(tmp_path)).split(True, None)


def test_pickle_release_with_the_knob_reads_arrays_only(tmp_path):
    batches = fake_trees.cifar_pickle(tmp_path)
    train = CIFAR10(str(tmp_path), allow_pickle_release=True).split(True, None)
    data, labels = batches["data_batch_2"]
    assert len(train) == 15 and train.targets[3:6].tolist() == labels
    assert (train.image(3).tobytes() == data[0].reshape(3, 32, 32).transpose(1, 2, 0).tobytes())
    assert train.classes[0] == "c0"


class _Payload:
    def __reduce__(self):
        return os.system, ("touch pwned_marker",)


def test_pickle_release_never_runs_code(tmp_path, monkeypatch):
    fake_trees.cifar_pickle(tmp_path)
    with open(tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_1", "wb") as f:
        pickle.dump({"data": _Payload(), "labels": [0]}, f, protocol=2)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="refusing to load (posix|os|nt).system"):
        CIFAR10(str(tmp_path), allow_pickle_release=True).split(True, None)
    assert not (tmp_path / "pwned_marker").exists()
