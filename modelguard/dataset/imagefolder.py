"""Your own dataset as an image folder, in any role (victim, query pool, outlier set).

``<path>/train/<class>/*`` and ``<path>/test/<class>/*`` (the same class folders in both),
or, with ``test_fraction``, a single ``<path>/<class>/*`` tree split per class with DS_SEED
(round(test_fraction x the class's size) test images each). ``path`` is relative to the data
root or absolute; ``family`` picks the size and transforms (imagenet: 224 px, cifar and
tinyimagenet: 32 px).
"""
from __future__ import annotations

from pathlib import Path

from modelguard.dataset.folders import class_folders, has_image, scan_classes
from modelguard.dataset.images import FileImages, ImageSet
from modelguard.dataset.source import ImageSource
from modelguard.dataset.splits import per_class_holdout


class ImageFolder(ImageSource):
    name = "imagefolder"
    layout = ("<path>/train/<class>/<image>.jpg   (.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp)",
              "<path>/test/<class>/<image>.jpg    (the same class folders)",
              "or, with test_fraction: <path>/<class>/<image>.jpg")
    source = "your own images; <path> is relative to the data root (paths.data_dir) or absolute"

    def __init__(self, root: str, path: str = "imagefolder", family: str = "imagenet",
                 test_fraction: float | None = None):
        if test_fraction is not None and not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction={test_fraction} of dataset imagefolder is invalid: it must lie strictly "
                             "between 0 and 1, or be null for separate train/ and test/ folders")
        super().__init__(root, family)
        self.path = path
        self.test_fraction = test_fraction
        self._scans: dict[str, tuple] = {}

    @property
    def folder(self) -> Path:
        return self.root / Path(self.path).expanduser()

    def _tree(self, train: bool) -> Path:
        if self.test_fraction is not None:
            return self.folder
        return self.folder / ("train" if train else "test")

    def check(self) -> None:
        self.require_dir(self.folder, f"the folder {self.path}")
        trees = [self._tree(True)] if self.test_fraction is not None else [self._tree(True), self._tree(False)]
        for tree in trees:
            self.require_dir(tree, f"the folder {tree.name}/" if tree != self.folder else "the folder")
            classes = class_folders(tree)
            if not classes:
                raise self.error("no class folders", tree)
            if not has_image(tree / classes[0]):
                raise self.error(f"class folder {classes[0]} holds no images", tree / classes[0])

    def _scan(self, tree: Path) -> tuple:
        key = str(tree)
        if key not in self._scans:
            classes, paths, labels, empty = scan_classes(tree)
            if empty:
                raise self.error(f"class folders without images: {', '.join(empty[:5])}", tree)
            self._scans[key] = classes, paths, labels
        return self._scans[key]

    def _load_split(self, train: bool) -> ImageSet:
        classes, paths, labels = self._scan(self._tree(train))
        if self.test_fraction is not None:
            train_idx, test_idx = per_class_holdout(labels, test_fraction=self.test_fraction)
            index = train_idx if train else test_idx
            return FileImages(self.name, [paths[i] for i in index], [labels[i] for i in index], classes)
        if not train:
            train_classes = self._scan(self._tree(True))[0]
            if classes != train_classes:
                extra = sorted(set(classes) ^ set(train_classes))
                raise self.error(f"train/ and test/ hold different class folders (e.g. {', '.join(extra[:3])})",
                                 self.folder)
        return FileImages(self.name, paths, labels, classes)
