"""MIT Indoor-67 as the original reads it (spec attacks §1.3): the outlier-exposure set of the
imagenet-family victims.

``<data root>/indoor/Images/<class>/*.jpg`` read as an image folder, and
``indoor/TestImages.txt`` listing test files relative to ``Images/`` (``kitchen/int474.jpg``);
every other image is train. ``TrainImages.txt`` is not read.
"""
from __future__ import annotations

import os

from modelguard.dataset.folders import class_folders, has_image, scan_classes
from modelguard.dataset.images import FileImages, ImageSet
from modelguard.dataset.source import ImageSource


class Indoor67(ImageSource):
    name = "indoor67"
    folder_name = "indoor"
    layout = ("indoor/Images/airport_inside/airport_inside_0001.jpg",
              "indoor/Images/artstudio/...  (67 class folders)",
              "indoor/TestImages.txt   (one test file per line, relative to Images/: kitchen/int474.jpg)")
    source = ("https://web.mit.edu/torralba/www/indoor.html (indoorCVPR_09.tar and TestImages.txt; "
              "extract Images/ into <data root>/indoor/)")

    def __init__(self, root: str, family: str = "imagenet"):
        super().__init__(root, family)
        self._scan = None

    def check(self) -> None:
        images = self.folder / "Images"
        self.require_dir(images, "the folder indoor/Images")
        self.require_file(self.folder / "TestImages.txt", "indoor/TestImages.txt")
        classes = class_folders(images)
        if not classes:
            raise self.error("no class folders inside indoor/Images", images)
        if not has_image(images / classes[0]):
            raise self.error(f"class folder {classes[0]} holds no images", images / classes[0])

    def _load_split(self, train: bool) -> ImageSet:
        if self._scan is None:
            images = self.folder / "Images"
            classes, paths, labels, empty = scan_classes(images)
            if empty:
                raise self.error(f"class folders without images: {', '.join(empty[:5])}", images)
            with open(self.folder / "TestImages.txt", encoding="utf-8") as f:
                listed = {line.strip().replace("\\", "/") for line in f if line.strip()}
            relative = [os.path.relpath(p, images).replace(os.sep, "/") for p in paths]
            is_test = [r in listed for r in relative]
            if listed and not any(is_test):
                raise self.error("no file listed in TestImages.txt exists under Images/ "
                                 "(its lines must be paths relative to Images/)", self.folder / "TestImages.txt")
            self._scan = classes, paths, labels, is_test
        classes, paths, labels, is_test = self._scan
        index = [i for i, t in enumerate(is_test) if t != train]
        return FileImages(self.name, [paths[i] for i in index], [labels[i] for i in index], classes)
