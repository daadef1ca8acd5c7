"""The one error a user sees for missing or malformed data on disk.

``DataError`` subclasses ValueError: ``python main.py`` prints its message (on one line,
``modelguard/errors.py``) and exits with code 2. Every message
names the dataset, the path looked in, the expected layout (a few lines of the tree) and
where the data comes from, so the user can fix it without reading code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence


class DataError(ValueError):
    """Missing, misplaced or malformed dataset files (a user error: exit code 2)."""


def layout_error(dataset: str, problem: str, looked_in: Path | str, layout: Sequence[str], source: str) -> DataError:
    """A ``DataError`` that says what is wrong, where we looked, what we expect and where to get it."""
    tree = "\n".join(f"    {line}" for line in layout)
    return DataError(f"dataset {dataset}: {problem}\n"
                     f"  looked in: {looked_in}\n"
                     f"  expected layout:\n{tree}\n"
                     f"  get it from: {source}")


def image_error(dataset: str, path: Path | str, err: BaseException) -> DataError:
    """A file that is not a readable image: name it, so the user can replace or delete it."""
    return DataError(f"dataset {dataset}: cannot read image {path} ({type(err).__name__}: {err}); "
                     "the file is corrupt or not an image: replace it from the original archive or delete it")
