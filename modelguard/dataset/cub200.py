"""CUB-200-2011 as the original reads it (spec attacks §1.3): a victim of the imagenet family.

``<data root>/CUB_200_2011/images/<class>/*.jpg`` read as an image folder, with
``images.txt`` (``<id> <class>/<file>``) and ``train_test_split.txt`` (``<id> <flag>``, 1 =
train) beside ``images/``. Each image on disk is matched to its id by file name. 5,994 train
and 5,794 test images on the full dataset.
"""
from __future__ import annotations

import os

from modelguard.dataset.folders import class_folders, has_image, read_rows, scan_classes
from modelguard.dataset.images import FileImages, ImageSet
from modelguard.dataset.source import ImageSource


class CUB200(ImageSource):
    name = "cub200"
    folder_name = "CUB_200_2011"
    layout = ("CUB_200_2011/images/001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg",
              "CUB_200_2011/images.txt             (<id> <class>/<file>)",
              "CUB_200_2011/train_test_split.txt   (<id> <1 = train, 0 = test>)")
    source = ("https://www.vision.caltech.edu/datasets/cub_200_2011/ (CUB_200_2011.tgz, "
              "extract it into the data root)")

    def __init__(self, root: str, family: str = "imagenet"):
        super().__init__(root, family)
        self._scan = None

    def check(self) -> None:
        images = self.folder / "images"
        self.require_dir(images, "the folder CUB_200_2011/images")
        self.require_file(self.folder / "images.txt", "CUB_200_2011/images.txt")
        self.require_file(self.folder / "train_test_split.txt", "CUB_200_2011/train_test_split.txt")
        classes = class_folders(images)
        if not classes:
            raise self.error("no class folders inside CUB_200_2011/images", images)
        if not has_image(images / classes[0]):
            raise self.error(f"class folder {classes[0]} holds no images", images / classes[0])

    def _flags_by_file(self) -> dict[str, bool]:
        """File name -> is-train, from images.txt and train_test_split.txt."""
        listed, flags = self.folder / "images.txt", self.folder / "train_test_split.txt"
        file_of = {}
        for number, fields in read_rows(listed):
            if len(fields) != 2:
                raise self.error(f"line {number} of images.txt is not '<id> <class>/<file>'", listed)
            file_of[fields[0]] = os.path.basename(fields[1])
        by_file = {}
        for number, fields in read_rows(flags):
            if len(fields) != 2 or fields[1] not in ("0", "1") or fields[0] not in file_of:
                raise self.error(f"line {number} of train_test_split.txt is not '<id from images.txt> <0|1>'",
                                 flags)
            by_file[file_of[fields[0]]] = fields[1] == "1"
        return by_file

    def _load_split(self, train: bool) -> ImageSet:
        if self._scan is None:
            classes, paths, labels, empty = scan_classes(self.folder / "images")
            if empty:
                raise self.error(f"class folders without images: {', '.join(empty[:5])}", self.folder / "images")
            by_file = self._flags_by_file()
            unlisted = [p for p in paths if os.path.basename(p) not in by_file]
            if unlisted:
                raise self.error(f"{len(unlisted)} image(s) on disk have no train/test flag, e.g. {unlisted[0]}: "
                                 "images.txt and train_test_split.txt do not match the images folder")
            self._scan = classes, paths, labels, [by_file[os.path.basename(p)] for p in paths]
        classes, paths, labels, is_train = self._scan
        index = [i for i, t in enumerate(is_train) if t == train]
        return FileImages(self.name, [paths[i] for i in index], [labels[i] for i in index], classes)
