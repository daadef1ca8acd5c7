"""ImageNet-1k (ILSVRC2012) as the original reads it (spec attacks §1.3): the query pool (and
shadow set) of the imagenet-family victims.

Only ``<data root>/ILSVRC2012/train/<wnid>/*.JPEG`` is read (the val folder never is). Split:
int(0.2 N) indices drawn without replacement with DS_SEED are test; the rest, ascending, are
train (about 1.025M images). The attack queries the train split.
"""
from __future__ import annotations

from modelguard.dataset.folders import class_folders, has_image, scan_classes
from modelguard.dataset.images import FileImages, ImageSet
from modelguard.dataset.source import ImageSource
from modelguard.dataset.splits import fraction_holdout


class ImageNet1k(ImageSource):
    name = "imagenet1k"
    folder_name = "ILSVRC2012"
    layout = ("ILSVRC2012/train/n01440764/n01440764_10026.JPEG",
              "ILSVRC2012/train/n01443537/...  (1000 wnid folders; val/ is not read)")
    source = ("https://image-net.org/download-images.php (ILSVRC2012_img_train.tar, after registration; "
              "extract each class tar into ILSVRC2012/train/<wnid>/)")
    TEST_FRACTION = 0.2

    def __init__(self, root: str, family: str = "imagenet"):
        super().__init__(root, family)
        self._scan = None

    def check(self) -> None:
        train = self.folder / "train"
        self.require_dir(train, "the folder ILSVRC2012/train")
        classes = class_folders(train)
        if not classes:
            raise self.error("no class folders (<wnid>/) inside ILSVRC2012/train", train)
        if not has_image(train / classes[0]):
            raise self.error(f"class folder {classes[0]} holds no images", train / classes[0])

    def _load_split(self, train: bool) -> ImageSet:
        if self._scan is None:
            classes, paths, labels, empty = scan_classes(self.folder / "train")
            if empty:
                raise self.error(f"class folders without images: {', '.join(empty[:5])}", self.folder / "train")
            self._scan = classes, paths, labels, fraction_holdout(len(paths), self.TEST_FRACTION)
        classes, paths, labels, (train_idx, test_idx) = self._scan
        index = train_idx if train else test_idx
        return FileImages(self.name, [paths[i] for i in index], [labels[i] for i in index], classes)
