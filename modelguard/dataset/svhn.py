"""SVHN (cropped digits, 32x32) as torchvision lays it out (spec attacks §1.3): the
outlier-exposure set of the CIFAR victims, in the cifar family.

``<data root>/svhn/train_32x32.mat`` (train) and ``test_32x32.mat`` (test), MATLAB v5 files
read with scipy (``X``: uint8 [32, 32, 3, N]; ``y``: [N, 1], digit 0 stored as 10, mapped to
0 as torchvision does). Classes are 0..9. With ``download=true`` torchvision's downloader
fetches the missing files (checked by MD5); nothing downloads otherwise.
"""
from __future__ import annotations

import numpy as np

from modelguard.dataset.errors import DataError
from modelguard.dataset.images import ArrayImages, ImageSet
from modelguard.dataset.source import ImageSource

URL = "http://ufldl.stanford.edu/housenumbers/"
FILES = {True: ("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
         False: ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3")}


class SVHN(ImageSource):
    name = "svhn"
    folder_name = "svhn"
    layout = ("svhn/train_32x32.mat",
              "svhn/test_32x32.mat")
    source = f"{URL} (train_32x32.mat, test_32x32.mat), or download=true on this dataset's config"

    def __init__(self, root: str, family: str = "cifar", download: bool = False):
        super().__init__(root, family)
        self.download = download

    def _file(self, train: bool):
        return self.folder / FILES[train][0]

    def check(self) -> None:
        if self.download:
            self.fetch()
        if not self.folder.is_dir():
            self.require_dir(self.folder, "the folder svhn")
        self.require_file(self._file(True), "svhn/train_32x32.mat")

    def fetch(self) -> None:
        """Download the missing .mat files with torchvision's downloader (MD5 checked)."""
        from torchvision.datasets.utils import download_url
        for name, md5 in FILES.values():
            if not (self.folder / name).is_file():
                download_url(URL + name, str(self.folder), name, md5)

    def _load_split(self, train: bool) -> ImageSet:
        path = self._file(train)
        self.require_file(path, f"svhn/{path.name}")
        try:
            from scipy.io import loadmat
        except ImportError as err:  # scipy is a dependency (setup.cfg); say so if an environment lacks it
            raise DataError("dataset svhn: reading its .mat files needs scipy: pip install scipy") from err
        try:
            mat = loadmat(path, variable_names=("X", "y"))
            images, labels = mat["X"], np.asarray(mat["y"]).reshape(-1).astype(np.int64)
        except (ValueError, OSError, KeyError, NotImplementedError, TypeError) as err:
            raise self.error(f"{path.name} is not a readable SVHN .mat file with X and y "
                             f"({type(err).__name__}: {err}); download it again", path) from err
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[:3] != (32, 32, 3):
            raise self.error(f"{path.name} holds X of shape {images.shape} ({images.dtype}), "
                             "not uint8 [32, 32, 3, N]", path)
        if labels.size and (labels.min() < 0 or labels.max() > 10):
            raise self.error(f"{path.name} holds labels outside 0..10", path)
        labels[labels == 10] = 0
        return ArrayImages(self.name, images, labels, [str(d) for d in range(10)], sample_axis=3, source=str(path))
