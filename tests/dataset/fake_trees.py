"""Tiny fake copies of each dataset's on-disk layout (spec attacks §1.3), written by the tests.

Each builder writes a few small random images per class into the dataset's exact tree under
``root`` (the data root) and returns what the loader should find. Nothing is downloaded.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, seed: int, size: tuple[int, int] = (20, 16)) -> np.ndarray:
    """A random RGB image of ``size`` (width, height) at ``path`` (format from the extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def class_tree(folder: Path, counts: dict[str, int], ext: str = ".jpg", size=(20, 16), nested: str = "") -> list[Path]:
    """``folder/<class>/[nested/]<class>_<i><ext>`` with counts[class] images each."""
    written = []
    for c, (name, n) in enumerate(counts.items()):
        for i in range(n):
            path = folder / name / nested / f"{name}_{i:04d}{ext}"
            write_image(path, seed=1000 * c + i, size=size)
            written.append(path)
    return written


def caltech256(root: Path, counts=None) -> dict:
    counts = counts or {"001.ak47": 27, "002.american-flag": 26, "003.backpack": 30}
    class_tree(root / "256_ObjectCategories", {**counts, "257.clutter": 4}, size=(30, 24))
    return {"classes": sorted(counts), "counts": counts}


def imagenet1k(root: Path, counts=None) -> dict:
    counts = counts or {"n01440764": 6, "n01443537": 5, "n01484850": 7}
    class_tree(root / "ILSVRC2012" / "train", counts, ext=".JPEG", size=(28, 22))
    class_tree(root / "ILSVRC2012" / "val", {"n01440764": 1}, ext=".JPEG")  # present on disk, never read
    return {"classes": sorted(counts), "counts": counts}


def cub200(root: Path, counts=None) -> dict:
    """images/, images.txt and train_test_split.txt; images alternate train (1) and test (0)."""
    counts = counts or {"001.Black_footed_Albatross": 4, "002.Laysan_Albatross": 3, "003.Sooty_Albatross": 5}
    base = root / "CUB_200_2011"
    written = class_tree(base / "images", counts)
    ids, flags, train = [], [], 0
    for i, path in enumerate(written, start=1):
        ids.append(f"{i} {path.parent.name}/{path.name}")
        flags.append(f"{i} {i % 2}")
        train += i % 2
    (base / "images.txt").write_text("\n".join(ids) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(flags) + "\n")
    return {"classes": sorted(counts), "train": train, "test": len(written) - train}


def tinyimagenet200(root: Path, wnids=("n01443537", "n01629819", "n01641577"), per_class=4, val_per_class=2,
                    val2: bool = False) -> dict:
    """train/<wnid>/images/*.JPEG (+ the archive's boxes file), val/images + val_annotations.txt
    (or, with ``val2``, the original's val/val2/<wnid>/ layout), words.txt; 64x64 images."""
    base = root / "tiny-imagenet-200"
    class_tree(base / "train", {w: per_class for w in wnids}, ext=".JPEG", size=(64, 64), nested="images")
    for w in wnids:
        (base / "train" / w / f"{w}_boxes.txt").write_text("ignored\n")
    lines, k = [], 0
    for c, w in enumerate(wnids):
        for _ in range(val_per_class):
            name = f"val_{k}.JPEG"
            target = base / "val" / ("val2/" + w if val2 else "images") / name
            write_image(target, seed=50_000 + k, size=(64, 64))
            lines.append(f"{name}\t{w}\t0\t0\t63\t63")
            k += 1
    if not val2:
        (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (base / "words.txt").write_text("".join(f"{w}\tthing number {i}, other name\n" for i, w in enumerate(wnids)))
    return {"wnids": list(wnids), "train": per_class * len(wnids), "test": val_per_class * len(wnids)}


def indoor67(root: Path, counts=None, test_per_class=1) -> dict:
    counts = counts or {"airport_inside": 4, "bakery": 3, "kitchen": 5}
    written = class_tree(root / "indoor" / "Images", counts)
    test = [p for p in written if int(p.stem.rsplit("_", 1)[1]) < test_per_class]
    (root / "indoor" / "TestImages.txt").write_text("".join(f"{p.parent.name}/{p.name}\n" for p in test))
    (root / "indoor" / "TrainImages.txt").write_text("not read\n")
    return {"classes": sorted(counts), "test": len(test), "train": len(written) - len(test)}


def svhn(root: Path, n_train=12, n_test=6) -> dict:
    """train_32x32.mat / test_32x32.mat: X uint8 [32, 32, 3, N], y [N, 1] with digit 0 stored as 10."""
    from scipy.io import savemat
    out = {}
    for name, n in (("train", n_train), ("test", n_test)):
        rng = np.random.default_rng(len(name))
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)  # 1..10, 10 meaning 0
        (root / "svhn").mkdir(parents=True, exist_ok=True)
        savemat(root / "svhn" / f"{name}_32x32.mat", {"X": x, "y": y})
        out[name] = (x, y)
    return out


CIFAR_BINARY = {10: ("cifar10", "cifar-10-batches-bin", [f"data_batch_{i}.bin" for i in range(1, 6)], "test_batch.bin"),
                100: ("cifar100", "cifar-100-binary", ["train.bin"], "test.bin")}


def cifar_binary(root: Path, k: int = 10, per_file: int = 3, test: int = 4) -> dict:
    """The binary release: records of label byte(s) + 3072 channel-major pixels. CIFAR-100
    records carry coarse label = fine % 20, so reading the wrong byte shows."""
    top, folder, train_files, test_file = CIFAR_BINARY[k]
    base = root / top / folder
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(k)
    images, labels = {}, {}
    for split, files, n in (("train", train_files, per_file), ("test", [test_file], test)):
        images[split], labels[split] = [], []
        for f in files:
            x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
            fine = rng.integers(0, k, n).astype(np.uint8)
            head = fine[:, None] if k == 10 else np.stack([fine % 20, fine], axis=1)
            (base / f).write_bytes(np.concatenate([head, x.reshape(n, -1)], axis=1).tobytes())
            images[split].append(x.transpose(0, 2, 3, 1))
            labels[split].append(fine)
    names = "batches.meta.txt" if k == 10 else "fine_label_names.txt"
    (base / names).write_text("".join(f"class{i:03d}\n" for i in range(k)))
    return {s: (np.concatenate(images[s]), np.concatenate(labels[s])) for s in images}


def cifar_folders(root: Path, k: int = 10, train_per_class: int = 2, test_per_class: int = 1) -> dict:
    """The image-folder export: <top>/{train,test}/<class>/*.png with k class folders."""
    top = CIFAR_BINARY[k][0]
    names = {f"class{i:03d}": None for i in range(k)}
    class_tree(root / top / "train", dict.fromkeys(names, train_per_class), ext=".png", size=(32, 32))
    class_tree(root / top / "test", dict.fromkeys(names, test_per_class), ext=".png", size=(32, 32))
    return {"train": k * train_per_class, "test": k * test_per_class}


def cifar_pickle(root: Path, n: int = 3) -> dict:
    """CIFAR-10's python release (pickled dicts of numpy arrays, protocol 2 as the real files)."""
    base = root / "cifar10" / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        with open(base / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels, "data": data, "filenames": ["x.png"] * n}, f, protocol=2)
        batches[name] = (data, labels)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)], "num_vis": 3072}, f, protocol=2)
    return batches


def imagefolder(folder: Path, counts=None, split: bool = True, size=(40, 30)) -> dict:
    """<folder>/{train,test}/<class>/*.png, or (split=False) a single <folder>/<class>/ tree."""
    counts = counts or {"cats": 4, "dogs": 6}
    if split:
        class_tree(folder / "train", counts, ext=".png", size=size)
        class_tree(folder / "test", {c: 2 for c in counts}, ext=".png", size=size)
    else:
        class_tree(folder, counts, ext=".png", size=size)
    return {"classes": sorted(counts), "counts": counts}


def corrupt(path: Path) -> Path:
    """Replace an image's bytes with garbage that no decoder accepts."""
    path.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg" + bytes(40))
    return path
