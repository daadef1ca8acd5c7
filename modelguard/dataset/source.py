"""``ImageSource``: one dataset on disk, the member a bundle uses as victim, query pool or outlier set.

A source is built from plain arguments (the data root, its family, a few knobs) and touches
no file until asked: constructing one is free, so a config with a wrong path composes and
fails only where the data is needed. Then:

- ``check()`` looks at the layout within milliseconds (folders and list files exist, a class
  folder holds an image) and raises a ``DataError`` naming the dataset, the path, the expected
  tree and the source;
- ``split(train, view)`` returns the train or test split as an ``ImageSet`` under the
  family's ``view`` transform (train, test, blur) or None (PIL images); the file list is
  scanned once per source and shared by every view;
- ``num_classes`` and ``classes`` come from the train split.
"""
from __future__ import annotations

from pathlib import Path

from modelguard.dataset.errors import DataError, layout_error
from modelguard.dataset.families import Family, family
from modelguard.dataset.images import ImageSet


class ImageSource:
    name: str = "?"            # the dataset's name in messages and in ExperimentData
    folder_name: str = ""      # its folder under the data root
    layout: tuple[str, ...] = ()  # the expected tree, a few lines, relative to the data root
    source: str = ""           # where the data comes from

    def __init__(self, root: str | Path, family: str):
        self.root = Path(root).expanduser()
        self.family: Family = _family(family, self.name)
        self._splits: dict[bool, ImageSet] = {}

    @property
    def folder(self) -> Path:
        return self.root / self.folder_name

    # -- what subclasses provide --------------------------------------------------------------
    def check(self) -> None:
        """Fast layout check; raises DataError."""
        raise NotImplementedError

    def _load_split(self, train: bool) -> ImageSet:
        """The split with no transform (file lists read here, images not decoded)."""
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------------
    def split(self, train: bool, view: str | None) -> ImageSet:
        if train not in self._splits:
            self.check()
            self._splits[train] = self._load_split(train)
        images = self._splits[train]
        return images.with_transform(self.family.transform(view) if view is not None else None)

    @property
    def classes(self) -> list[str]:
        return self.split(True, None).classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def error(self, problem: str, looked_in: Path | None = None) -> DataError:
        return layout_error(self.name, problem, looked_in or self.folder, self.layout, self.source)

    def require_dir(self, path: Path, what: str) -> None:
        if not path.is_dir():
            problem = f"{what} not found" if path.exists() is False else f"{what} is not a folder"
            if not self.root.is_dir():
                problem = f"the data root {self.root} does not exist (set paths.data_dir or MODELGUARD_DATA)"
            raise self.error(problem, path)

    def require_file(self, path: Path, what: str) -> None:
        if not path.is_file():
            raise self.error(f"{what} not found", path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, family={self.family.name!r})"


def _family(name: str, dataset: str) -> Family:
    return family(name, knob=f"family of dataset {dataset}")
