"""CIFAR-10 and CIFAR-100, read without unpickling (spec attacks §1.3): the victims of the cifar family.

Under ``<data root>/cifar10/`` (``cifar100/``) we read, in this order of preference:

1. the official **binary** release, ``cifar-10-batches-bin/`` (``data_batch_1..5.bin``,
   ``test_batch.bin``, ``batches.meta.txt``) or ``cifar-100-binary/`` (``train.bin``,
   ``test.bin``, ``fine_label_names.txt``): fixed-size records memory-mapped, nothing decoded
   until asked; CIFAR-100 uses the fine labels (100 classes);
2. an **image-folder export**, ``train/<class>/*.png`` and ``test/<class>/*.png`` with the
   10 (100) class folders, whose sorted names are the official label order;
3. the **python release** (``cifar-10-batches-py/``, ``cifar-100-python/``), pickles, only with
   ``allow_pickle_release=true``. Even then no pickle runs arbitrary code: a restricted
   unpickler resolves only the numpy names an array needs (``_reconstruct``, ``ndarray``,
   ``dtype``, and ``_codecs.encode``, which Python 3 writes for bytes) and refuses any other
   global, so a tampered file fails instead of executing. We still prefer the binary release, which needs no unpickling at all.

``download=true`` fetches the binary release with torchvision's downloader (MD5 checked);
torchvision's own CIFAR classes would fetch the python release, which we read only by opt-in.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from modelguard.dataset.errors import DataError
from modelguard.dataset.folders import class_folders, scan_classes
from modelguard.dataset.images import ArrayImages, FileImages, ImageSet, RecordImages
from modelguard.dataset.source import ImageSource

RELEASES = ("binary", "folders", "pickle")


class _CIFAR(ImageSource):
    # Set by the two subclasses below.
    num_classes_expected: int
    binary_dir: str
    binary_train: tuple[str, ...]
    binary_test: str
    label_bytes: int         # 1 (CIFAR-10) or 2 (CIFAR-100: coarse, then fine)
    label_names_file: str
    pickle_dir: str
    pickle_train: tuple[str, ...]
    pickle_test: str
    pickle_labels: str
    pickle_meta: tuple[str, str]  # file, key of the class names
    url: str
    md5: str

    def __init__(self, root: str, family: str = "cifar", download: bool = False, allow_pickle_release: bool = False):
        super().__init__(root, family)
        self.download = download
        self.allow_pickle_release = allow_pickle_release

    # -- which release is on disk -------------------------------------------------------------
    def releases_present(self) -> list[str]:
        found = []
        binary = self.folder / self.binary_dir
        if all((binary / f).is_file() for f in (*self.binary_train, self.binary_test)):
            found.append("binary")
        if (self.folder / "train").is_dir() and (self.folder / "test").is_dir():
            found.append("folders")
        pickled = self.folder / self.pickle_dir
        if all((pickled / f).is_file() for f in (*self.pickle_train, self.pickle_test)):
            found.append("pickle")
        return found

    def release(self) -> str:
        found = self.releases_present()
        if not found and self.download:
            self.fetch()
            found = self.releases_present()
        if not found:
            if not self.root.is_dir():
                raise self.error(f"the data root {self.root} does not exist (set paths.data_dir or MODELGUARD_DATA)")
            raise self.error(f"no {self.title} release found (set download=true on this dataset's config to fetch "
                             "the binary release)")
        if found == ["pickle"] and not self.allow_pickle_release:
            raise self.error(f"only the python (pickle) release is here, {self.folder / self.pickle_dir}; "
                             "it is read only with allow_pickle_release=true (a restricted unpickler: numpy arrays "
                             "only). Prefer the binary release, which needs no unpickling")
        return next(r for r in RELEASES if r in found and (r != "pickle" or self.allow_pickle_release))

    def check(self) -> None:
        if self.release() == "folders":
            for part in ("train", "test"):
                classes = class_folders(self.folder / part)
                if len(classes) != self.num_classes_expected:
                    raise self.error(f"{part}/ holds {len(classes)} class folders, not {self.num_classes_expected}",
                                     self.folder / part)

    def fetch(self) -> None:
        """Download and extract the binary release with torchvision's downloader (MD5 checked)."""
        from torchvision.datasets.utils import download_and_extract_archive
        download_and_extract_archive(self.url, str(self.folder), md5=self.md5)

    @property
    def title(self) -> str:
        return "CIFAR-10" if self.num_classes_expected == 10 else "CIFAR-100"

    # -- the three readers --------------------------------------------------------------------
    def _load_split(self, train: bool) -> ImageSet:
        release = self.release()
        if release == "binary":
            return self._binary(train)
        if release == "folders":
            return self._folders(train)
        return self._pickled(train)

    def _binary(self, train: bool) -> ImageSet:
        folder = self.folder / self.binary_dir
        files = [folder / f for f in (self.binary_train if train else (self.binary_test,))]
        return RecordImages(self.name, files, self.label_bytes, self.label_bytes - 1,
                            self._names(folder / self.label_names_file))

    def _names(self, path: Path) -> list[str]:
        names = path.read_text(encoding="utf-8").split() if path.is_file() else []
        return names if len(names) == self.num_classes_expected else [str(i) for i in range(self.num_classes_expected)]

    def _folders(self, train: bool) -> ImageSet:
        tree = self.folder / ("train" if train else "test")
        classes, paths, labels, empty = scan_classes(tree)
        if empty:
            raise self.error(f"class folders without images: {', '.join(empty[:5])}", tree)
        return FileImages(self.name, paths, labels, classes)

    def _pickled(self, train: bool) -> ImageSet:
        folder = self.folder / self.pickle_dir
        images, labels = [], []
        for name in (self.pickle_train if train else (self.pickle_test,)):
            batch = load_restricted(folder / name, self.name)
            data = batch.get("data")
            if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
                raise self.error(f"{name} holds no uint8 [N, 3072] 'data' array", folder / name)
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.extend(int(y) for y in batch.get(self.pickle_labels, []))
        meta_file, key = self.pickle_meta
        meta = load_restricted(folder / meta_file, self.name) if (folder / meta_file).is_file() else {}
        names = [str(n) for n in meta.get(key, [])] or [str(i) for i in range(self.num_classes_expected)]
        return ArrayImages(self.name, np.ascontiguousarray(np.concatenate(images)), labels, names,
                           source=str(folder))


class CIFAR10(_CIFAR):
    name = "cifar10"
    folder_name = "cifar10"
    layout = ("cifar10/cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin   (binary release)",
              "or cifar10/{train,test}/<class>/*.png                        (image-folder export)")
    source = "https://www.cs.toronto.edu/~kriz/cifar.html (CIFAR-10 binary version, extract into cifar10/)"
    num_classes_expected = 10
    binary_dir = "cifar-10-batches-bin"
    binary_train = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
    binary_test = "test_batch.bin"
    label_bytes = 1
    label_names_file = "batches.meta.txt"
    pickle_dir = "cifar-10-batches-py"
    pickle_train = tuple(f"data_batch_{i}" for i in range(1, 6))
    pickle_test = "test_batch"
    pickle_labels = "labels"
    pickle_meta = ("batches.meta", "label_names")
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    md5 = "c32a1d4ab5d03f1284b67883e8d87530"


class CIFAR100(_CIFAR):
    name = "cifar100"
    folder_name = "cifar100"
    layout = ("cifar100/cifar-100-binary/{train,test}.bin   (binary release)",
              "or cifar100/{train,test}/<class>/*.png      (image-folder export, 100 class folders)")
    source = "https://www.cs.toronto.edu/~kriz/cifar.html (CIFAR-100 binary version, extract into cifar100/)"
    num_classes_expected = 100
    binary_dir = "cifar-100-binary"
    binary_train = ("train.bin",)
    binary_test = "test.bin"
    label_bytes = 2
    label_names_file = "fine_label_names.txt"
    pickle_dir = "cifar-100-python"
    pickle_train = ("train",)
    pickle_test = "test"
    pickle_labels = "fine_labels"
    pickle_meta = ("meta", "fine_label_names")
    url = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"
    md5 = "03b5dce01913d631647c71ecec9e9cb8"


def _numpy_globals() -> dict[tuple[str, str], object]:
    import _codecs
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return {("numpy.core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
            # Python 3's protocol-2 pickles spell bytes as _codecs.encode(str, "latin1"): a pure function.
            ("_codecs", "encode"): _codecs.encode}


class _ArraysOnly(pickle.Unpickler):
    """Resolves only numpy's array reconstructors: a pickle naming anything else is refused."""
    allowed = _numpy_globals()

    def find_class(self, module: str, name: str):
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: the CIFAR python release holds only "
                                     "numpy arrays, lists and strings")


def load_restricted(path: Path, dataset: str) -> dict:
    """One pickle of the CIFAR python release through ``_ArraysOnly``; a dict with str keys."""
    try:
        with open(path, "rb") as f:
            obj = _ArraysOnly(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise DataError(f"dataset {dataset}: cannot read {path} as a CIFAR python batch ({err}); "
                        "use the binary release instead") from err
    if not isinstance(obj, dict):
        raise DataError(f"dataset {dataset}: {path} holds a {type(obj).__name__}, not a CIFAR batch dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
