"""Caltech-256 as the original reads it (spec attacks §1.3): a victim of the imagenet family.

``<data root>/256_ObjectCategories/<NNN.name>/*.jpg``, read as an image folder; the
``257.clutter`` class is dropped (256 classes left). Split: per class, in class order, its
indices shuffled by one RNG seeded with DS_SEED; the first 25 are test, the rest train
(6,400 test and about 23.4k train images on the full dataset).
"""
from __future__ import annotations

from modelguard.dataset.folders import class_folders, has_image, scan_classes
from modelguard.dataset.images import FileImages, ImageSet
from modelguard.dataset.source import ImageSource
from modelguard.dataset.splits import per_class_holdout


class Caltech256(ImageSource):
    name = "caltech256"
    folder_name = "256_ObjectCategories"
    layout = ("256_ObjectCategories/001.ak47/001_0001.jpg",
              "256_ObjectCategories/002.american-flag/002_0001.jpg",
              "...  256_ObjectCategories/256.toad/  (257.clutter is dropped)")
    source = ("https://data.caltech.edu/records/nyy15-4j048 (256_ObjectCategories.tar, "
              "extract it into the data root)")
    CLUTTER = "257.clutter"
    TEST_PER_CLASS = 25

    def __init__(self, root: str, family: str = "imagenet"):
        super().__init__(root, family)
        self._scan = None

    def check(self) -> None:
        self.require_dir(self.folder, "the folder 256_ObjectCategories")
        classes = [c for c in class_folders(self.folder) if c != self.CLUTTER]
        if not classes:
            raise self.error("no class folders (<NNN.name>/) inside 256_ObjectCategories")
        if not has_image(self.folder / classes[0]):
            raise self.error(f"class folder {classes[0]} holds no images (.jpg, .png, ...)", self.folder / classes[0])

    def _load_split(self, train: bool) -> ImageSet:
        if self._scan is None:
            classes, paths, labels, empty = scan_classes(self.folder, exclude=(self.CLUTTER,))
            if empty:
                raise self.error(f"class folders without images: {', '.join(empty[:5])}")
            self._scan = classes, paths, labels, per_class_holdout(labels, self.TEST_PER_CLASS)
        classes, paths, labels, (train_idx, test_idx) = self._scan
        index = train_idx if train else test_idx
        return FileImages(self.name, [paths[i] for i in index], [labels[i] for i in index], classes)
