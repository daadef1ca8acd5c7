"""Scanning image folders in torchvision's ImageFolder order, and reading the datasets' list files.

The order matters: the original's seeded splits (Caltech256, ImageNet1k) draw indices into
the ImageFolder sample list, so the same files in the same order give the same split.
ImageFolder's order: class folders sorted by name, then each class folder walked
recursively, directories and file names sorted, files kept by extension (case-insensitive).
"""
from __future__ import annotations

import os
from pathlib import Path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's


def class_folders(root: Path) -> list[str]:
    """Names of the sub-folders of ``root``, sorted (hidden folders skipped)."""
    with os.scandir(root) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def image_files(folder: Path) -> list[str]:
    """Image files under ``folder``, recursively, in ImageFolder order."""
    found = []
    for dirpath, _, names in sorted(os.walk(folder, followlinks=True)):
        found.extend(os.path.join(dirpath, n) for n in sorted(names) if n.lower().endswith(IMAGE_EXTENSIONS))
    return found


def has_image(folder: Path) -> bool:
    """Whether ``folder`` holds at least one image file (stops at the first: a fast layout check)."""
    for _, _, names in os.walk(folder, followlinks=True):
        if any(n.lower().endswith(IMAGE_EXTENSIONS) for n in names):
            return True
    return False


def scan_classes(root: Path, exclude: tuple[str, ...] = ()) -> tuple[list[str], list[str], list[int], list[str]]:
    """(classes, paths, labels, empty classes) of an image-folder tree ``root/<class>/...``."""
    classes = [c for c in class_folders(root) if c not in exclude]
    paths: list[str] = []
    labels: list[int] = []
    empty = []
    for label, name in enumerate(classes):
        files = image_files(root / name)
        if not files:
            empty.append(name)
        paths.extend(files)
        labels.extend([label] * len(files))
    return classes, paths, labels, empty


def read_rows(path: Path) -> list[tuple[int, list[str]]]:
    """Non-empty lines of a whitespace-separated list file as (line number, fields), so a caller
    that finds a malformed line can name it."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            fields = line.split()
            if fields:
                rows.append((number, fields))
    return rows
