"""Any folder of images (``folder``), searched recursively: unlabeled data, no landmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from equinv.data.image_io import IMAGE_SUFFIXES
from equinv.data.reader_info import ReaderInfo
from equinv.data.sample import LandmarkIndex, Record
from equinv.errors import InputError, SkipLog


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (any depth, hidden files and folders skipped), sorted by relative path."""
    found = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if p.suffix.lower() in IMAGE_SUFFIXES and not any(part.startswith(".") for part in rel.parts):
            if p.is_file():
                found.append((rel.as_posix(), p))
    return [p for _, p in sorted(found)]


def _record(p: Path, folder: Path) -> Record:
    return Record(
        path=p,
        landmarks=np.zeros((0, 2), np.float32),
        visible=np.zeros(0, bool),
        names=(),
        where=str(p),
        crop="whole",
        meta={"rel": p.relative_to(folder).as_posix() if p != folder else p.name},
    )


def read_folder(path: Path, options: dict, log: SkipLog) -> LandmarkIndex:
    """Every image under ``path`` (recursively, sorted), unlabeled, whole-image crop."""
    if path.is_file():
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise InputError(
                f"not a folder or an image file (image suffixes: {', '.join(IMAGE_SUFFIXES)})", path
            )
        return LandmarkIndex("folder", path, (), [_record(path, path)])
    files = list_images(path)
    if not files:
        raise InputError(
            f"no images found in the folder or below it (suffixes: {', '.join(IMAGE_SUFFIXES)})", path
        )
    return LandmarkIndex("folder", path, (), [_record(p, path) for p in files])


READER = ReaderInfo(
    kind="folder",
    fn=read_folder,
    help="a folder of images, searched recursively (no landmarks; e.g. unlabeled pretraining data)",
)
