"""Tiny ImageNet (200 classes, 64x64) as the original reads it (spec attacks §1.3, §12.22): the
query pool (and shadow set) of the CIFAR victims, in the tinyimagenet family (32 px).

Train: ``tiny-imagenet-200/train/<wnid>/...`` (nested folders are fine: the scan recurses, so
the archive's ``<wnid>/images/*.JPEG`` works as is). Test: the original reads
``tiny-imagenet-200/val/val2/<wnid>/*``, a layout its download script never builds; we read it
when present, and otherwise take the same images straight from the archive's
``val/images/*.JPEG`` and ``val/val_annotations.txt`` (file, wnid, box), so nothing has to be
rearranged on disk. Labels follow the train folders' order; class names are the
descriptions in ``words.txt`` when it is there. 100k train, 10k test images.
"""
from __future__ import annotations

from modelguard.dataset.folders import IMAGE_EXTENSIONS, class_folders, has_image, image_files, read_rows, scan_classes
from modelguard.dataset.images import FileImages, ImageSet
from modelguard.dataset.source import ImageSource


class TinyImageNet200(ImageSource):
    name = "tinyimagenet200"
    folder_name = "tiny-imagenet-200"
    layout = ("tiny-imagenet-200/train/n01443537/images/n01443537_0.JPEG",
              "tiny-imagenet-200/val/images/val_0.JPEG + val/val_annotations.txt  (or val/val2/<wnid>/*)",
              "tiny-imagenet-200/words.txt  (optional: class descriptions)")
    source = "http://cs231n.stanford.edu/tiny-imagenet-200.zip (unzip into the data root)"

    def __init__(self, root: str, family: str = "tinyimagenet"):
        super().__init__(root, family)
        self._train = None

    def check(self) -> None:
        train = self.folder / "train"
        self.require_dir(train, "the folder tiny-imagenet-200/train")
        classes = class_folders(train)
        if not classes:
            raise self.error("no class folders (<wnid>/) inside tiny-imagenet-200/train", train)
        if not has_image(train / classes[0]):
            raise self.error(f"class folder {classes[0]} holds no images", train / classes[0])
        val = self.folder / "val"
        if not (val / "val2").is_dir() and not (val / "val_annotations.txt").is_file():
            raise self.error("no test split: neither val/val2/<wnid>/ nor val/val_annotations.txt", val)

    def _train_scan(self):
        if self._train is None:
            wnids, paths, labels, empty = scan_classes(self.folder / "train")
            if empty:
                raise self.error(f"class folders without images: {', '.join(empty[:5])}", self.folder / "train")
            self._train = wnids, paths, labels
        return self._train

    def _class_names(self, wnids: list[str]) -> list[str]:
        words = self.folder / "words.txt"
        if not words.is_file():
            return wnids
        described = {}
        with open(words, encoding="utf-8") as f:
            for line in f:
                wnid, _, text = line.rstrip("\n").partition("\t")
                described[wnid] = text.strip() or wnid
        return [described.get(w, w) for w in wnids]

    def _load_split(self, train: bool) -> ImageSet:
        wnids, paths, labels = self._train_scan()
        names = self._class_names(wnids)
        if train:
            return FileImages(self.name, paths, labels, names)
        label_of = {w: i for i, w in enumerate(wnids)}
        pairs = self._val2(label_of) if (self.folder / "val" / "val2").is_dir() else self._annotated(label_of)
        return FileImages(self.name, [p for p, _ in pairs], [y for _, y in pairs], names)

    def _val2(self, label_of: dict[str, int]) -> list[tuple[str, int]]:
        root = self.folder / "val" / "val2"
        pairs = []
        for wnid in class_folders(root):
            if wnid not in label_of:
                raise self.error(f"val/val2/{wnid} is not one of the train classes", root / wnid)
            pairs += [(p, label_of[wnid]) for p in image_files(root / wnid)]
        return pairs

    def _annotated(self, label_of: dict[str, int]) -> list[tuple[str, int]]:
        annotations = self.folder / "val" / "val_annotations.txt"
        images = self.folder / "val" / "images"
        found = []
        for number, fields in read_rows(annotations):
            if len(fields) < 2:
                raise self.error(f"line {number} of val_annotations.txt is not '<file> <wnid> ...'", annotations)
            file, wnid = fields[0], fields[1]
            if wnid not in label_of:
                raise self.error(f"line {number} of val_annotations.txt names {wnid}, not a train class", annotations)
            path = images / file
            if not path.name.lower().endswith(IMAGE_EXTENSIONS) or not path.is_file():
                raise self.error(f"line {number} of val_annotations.txt names {file}, not an image in val/images",
                                 path)
            found.append((wnid, file, str(path)))
        # The order val/val2 would have: by class folder, then file name.
        found.sort()
        return [(p, label_of[w]) for w, _, p in found]
