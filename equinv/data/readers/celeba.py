"""Aligned CelebA (``celeba``) with the MAFL splits.

``list_landmarks_align_celeba.txt``: line 1 the row count, line 2 a header, then
``000001.jpg 69 109 106 113 77 142 73 152 108 154`` (x, y interleaved; left eye, right eye, nose, left
mouth corner, right mouth corner) in the **original 178×218 aligned frame**, 0-based as the reference
uses them. The images may be a scaled copy (e.g. ``img_align_celeba_half``, 89×109): the scale is read
from each image's header and applied, and stored in ``meta["scale"]``.

Layouts: the list (and ``mafl_training.txt`` / ``mafl_testing.txt``) directly in PATH, or the official
``Anno/``, ``Img/``, ``MAFL/{training,testing}.txt`` folders below PATH.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from equinv.data.image_io import image_size
from equinv.data.reader_info import ReaderInfo
from equinv.data.readers.common import in_ranges, pop_choice, pop_path, pop_ranges, read_lines
from equinv.data.readers.mtfl import EYES, NAMES
from equinv.data.sample import LandmarkIndex, Record, make_record, parse_numbers
from equinv.errors import InputError, SkipLog

LIST_NAME = "list_landmarks_align_celeba.txt"
IMAGE_DIRS = ("img_align_celeba_half", "img_align_celeba", "img_align_celeba_hq", "img_align_celeba_png")
FRAME = (178, 218)
SPLITS = ("all", "mafl_train", "mafl_test", "not_mafl")


def _find(root: Path, *cands: str) -> Path | None:
    for c in cands:
        if (root / c).exists():
            return root / c
    return None


def _mafl_names(root: Path, which: str) -> tuple[set[str], Path]:
    f = _find(root, f"mafl_{which}.txt", f"MAFL/{which}.txt")
    if f is None:
        raise InputError(
            f"MAFL {which} list not found (expected mafl_{which}.txt or MAFL/{which}.txt), needed by ?split=",
            root / f"mafl_{which}.txt",
        )
    return {text.split()[0] for _, text in read_lines(f, f"MAFL {which} list")}, f


def _scale_of(w: int, h: int) -> float | None:
    """Scale of a ``w × h`` image against 178×218, or ``None`` if it is not a uniform scale."""
    s = w / FRAME[0]
    return s if abs(h - FRAME[1] * s) <= 1.0 else None


def _list_and_root(path: Path) -> tuple[Path, Path]:
    """The landmark list and the dataset root, for a PATH that is the folder or the list itself."""
    if path.is_file():
        return path, path.parent.parent if path.parent.name == "Anno" else path.parent
    return _find(path, LIST_NAME, f"Anno/{LIST_NAME}") or path / LIST_NAME, path


def _image_dir(root: Path, options: dict) -> Path:
    """The image folder: ``?images=``, else the first of :data:`IMAGE_DIRS` (or ``Img/…``) under ``root``."""
    img_dir = pop_path(options, "images", root)
    if img_dir is None:
        img_dir = _find(root, *IMAGE_DIRS, *(f"Img/{d}" for d in IMAGE_DIRS))
        if img_dir is None:
            raise InputError(
                f"no CelebA image folder found (looked for {', '.join(IMAGE_DIRS)}; use ?images=)", root
            )
    elif not img_dir.is_dir():
        raise InputError("CelebA image folder (?images=) not found", img_dir)
    return img_dir


def _data_rows(lines: list[tuple[int, str]], list_file: Path, log: SkipLog) -> list[tuple[int, str]]:
    """The rows below the count line and the header; a count or header that looks wrong goes to ``log``."""
    if len(lines) < 2:
        raise InputError("expected a row-count line and a header line", list_file, 1)
    (l1, count_text), (l2, header) = lines[0], lines[1]
    rows = lines[2:]
    try:
        count = int(count_text)
    except ValueError:
        raise InputError(
            f"line 1 should be the number of rows, got {count_text[:40]!r}", list_file, l1
        ) from None
    if count != len(rows):
        log.bad(
            InputError(
                f"line 1 says {count} rows but the file has {len(rows)} "
                "(rows added or lost, e.g. by a merge?)",
                list_file,
                l1,
            )
        )
    if len(header.split()) != 10:
        log.bad(
            InputError(
                f"line 2 should be the 10-column header, got {len(header.split())} columns", list_file, l2
            )
        )
    return rows


@dataclass
class _Selection:
    """Which rows ``?split=`` and ``?ids=`` keep; ``train`` / ``test`` are the MAFL lists the split needs."""

    split: str
    ids: list[tuple[int, int]] | None
    train: set[str] | None = None
    test: set[str] | None = None

    @classmethod
    def load(cls, root: Path, split: str, ids: list[tuple[int, int]] | None) -> _Selection:
        """Read the MAFL lists ``split`` needs (training, then testing)."""
        sel = cls(split, ids)
        if split in ("mafl_train", "not_mafl"):
            sel.train, _ = _mafl_names(root, "training")
        if split in ("mafl_test", "not_mafl"):
            sel.test, _ = _mafl_names(root, "testing")
        return sel

    def keeps_id(self, name: str, num: int | None, list_file: Path, line: int) -> bool:
        """Whether ``?ids=`` keeps the row; a non-numeric name cannot be selected by id."""
        if self.ids is None:
            return True
        if num is None:
            raise InputError(f"cannot select ?ids= for {name}: the name is not a numeric id", list_file, line)
        return in_ranges(num, self.ids)

    def keeps_split(self, name: str) -> bool:
        """Whether ``?split=`` keeps the image ``name``."""
        if self.split == "mafl_train":
            return name in self.train
        if self.split == "mafl_test":
            return name in self.test
        if self.split == "not_mafl":
            return not (name in self.train or name in self.test)
        return True

    def mafl_meta(self, name: str) -> dict:
        """``{"mafl": "train" | "test" | None}`` when a MAFL list was read, else nothing."""
        if self.train is None and self.test is None:
            return {}
        in_train, in_test = self.train is not None and name in self.train, self.test is not None and name in self.test
        return {"mafl": "train" if in_train else ("test" if in_test else None)}


class _Scale:
    """All images must share one size, a uniform scale of the 178×218 frame; the first readable one sets it."""

    def __init__(self) -> None:
        self.common: tuple[float, tuple[int, int]] | None = None  # (scale, size) of the first readable image

    def of(self, img: Path, list_file: Path, line: int) -> tuple[tuple[int, int] | None, float | None]:
        """``(size, scale)`` of ``img``; an unreadable header gives ``(None, common scale or None)``."""
        try:
            size = image_size(img)
        except InputError:
            # missing/corrupt: reported by validate_records, which reads the header again
            return None, (self.common[0] if self.common is not None else None)
        s = _scale_of(*size)
        if s is None:
            raise InputError(
                f"image {img} is {size[0]}x{size[1]}, not a uniform scale of the 178x218 aligned frame",
                list_file,
                line,
            )
        if self.common is None:
            self.common = (s, size)
        elif size != self.common[1]:
            raise InputError(
                f"image {img} is {size[0]}x{size[1]} "
                f"but the first image is {self.common[1][0]}x{self.common[1][1]}"
                " (CelebA images must all have one size)",
                list_file,
                line,
            )
        return size, s


def _parse_row(text: str, list_file: Path, line: int, seen: dict[str, int]) -> tuple[str, np.ndarray]:
    """``(file name, (5, 2) points in the 178×218 frame)`` of one list row."""
    toks = text.split()
    if len(toks) != 11:
        raise InputError(f"expected 11 columns (file name, 10 coordinates), got {len(toks)}", list_file, line)
    name = toks[0]
    if name in seen:
        raise InputError(f"duplicate entry for {name} (first at line {seen[name]})", list_file, line)
    return name, parse_numbers(toks[1:], list_file, line).reshape(5, 2)


def _image_path(img_dir: Path, name: str) -> Path:
    """``img_dir / name``, or its ``.png`` twin when only that exists (``img_align_celeba_png``)."""
    img = img_dir / name
    if not img.is_file() and img.with_suffix(".png").is_file():
        img = img.with_suffix(".png")
    return img


@dataclass
class _RowReader:
    """Turns list rows into records, remembering the names seen and the common image scale."""

    list_file: Path
    img_dir: Path
    sel: _Selection
    seen: dict[str, int] = field(default_factory=dict)
    scale: _Scale = field(default_factory=_Scale)
    pending: list[tuple[Record, np.ndarray]] = field(default_factory=list)  # records without an image size

    def record(self, line: int, text: str) -> Record | None:
        """The record of one row, or ``None`` when ``?ids=`` / ``?split=`` leave it out."""
        name, xy = _parse_row(text, self.list_file, line, self.seen)
        stem = Path(name).stem
        num = int(stem) if stem.isdigit() else None
        keep = self.sel.keeps_id(name, num, self.list_file, line)
        self.seen[name] = line
        if not keep or not self.sel.keeps_split(name):
            return None
        img = _image_path(self.img_dir, name)
        size, s = self.scale.of(img, self.list_file, line)  # s is None until a size is known: see finish()
        meta = {"scale": s, "id": num, **self.sel.mafl_meta(name)}
        rec = make_record(img, xy * (s or 1.0), NAMES, self.list_file, line, crop="celeba", meta=meta)
        if size is not None:
            rec.meta["size"] = size
        else:
            self.pending.append((rec, xy))
        return rec

    def finish(self) -> None:
        """Records whose image header could not be read (validate_records reports them) take the common scale."""
        s = self.scale.common[0] if self.scale.common is not None else 1.0
        for rec, xy in self.pending:
            if rec.meta["scale"] is None:
                rec.meta["scale"] = s
                rec.landmarks = (xy * s).astype(np.float32)


def read_celeba(path: Path, options: dict, log: SkipLog) -> LandmarkIndex:
    """Read ``celeba:PATH``: the aligned landmark list, scaled to the images as stored."""
    list_file, root = _list_and_root(path)
    split = pop_choice(options, "split", "all", SPLITS)
    ids = pop_ranges(options, "ids")
    img_dir = _image_dir(root, options)
    lines = read_lines(list_file, "CelebA landmark list")
    rows = _RowReader(list_file, img_dir, _Selection.load(root, split, ids))
    records = []
    for line, text in _data_rows(lines, list_file, log):
        try:
            rec = rows.record(line, text)
        except InputError as e:
            log.bad(e)
            continue
        if rec is not None:
            records.append(rec)
    rows.finish()
    return LandmarkIndex("celeba", path, NAMES, records, eyes=EYES)


READER = ReaderInfo(
    kind="celeba",
    fn=read_celeba,
    help="aligned CelebA landmarks (PATH = folder with list_landmarks_align_celeba.txt and the images)",
    options={
        "split": "all (default) | mafl_train | mafl_test | not_mafl (rows in neither MAFL list)",
        "ids": "inclusive numeric id range(s), e.g. 9001-10000 or 1-100,200",
        "images": "image folder (default: first of " + ", ".join(IMAGE_DIRS) + " found; relative to PATH)",
    },
)
