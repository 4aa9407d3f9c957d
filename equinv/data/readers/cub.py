"""CUB-200-2011 birds (``cub``), standard layout.

``images.txt`` (``id relpath`` under ``images/``), ``train_test_split.txt`` (``id is_train``),
``image_class_labels.txt`` (``id class``), ``bounding_boxes.txt`` (``id x y w h``),
``parts/parts.txt`` (``part_id name``) and ``parts/part_locs.txt`` (``image_id part_id x y visible``).
Coordinates are kept as given (``?one_based=1`` subtracts 1); invisible parts get ``visible=False``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from equinv.data.reader_info import ReaderInfo
from equinv.data.readers.common import in_ranges, pop_choice, pop_int, pop_ranges, read_lines
from equinv.data.sample import Box, LandmarkIndex, make_record, parse_numbers
from equinv.errors import InputError, SkipLog

ROOT_NAME = "CUB_200_2011"


def _find_root(path: Path) -> Path:
    for c in (path, path / ROOT_NAME):
        if (c / "images.txt").is_file():
            return c
    raise InputError(
        f"not a CUB-200-2011 folder: images.txt not found here or in {ROOT_NAME}/", path / "images.txt"
    )


def _int(tok: str, file: Path, line: int, what: str) -> int:
    try:
        return int(tok)
    except ValueError:
        raise InputError(f"{what} must be an integer, got {tok!r}", file, line) from None


def _id_table(file: Path, what: str, ncols: int, cols: str, log: SkipLog, ids: dict | None = None) -> dict:
    """``{image_id: (tokens after the id, line)}`` of a per-image table; bad rows go to ``log``."""
    out: dict[int, tuple[list[str], int]] = {}
    for line, text in read_lines(file, what):
        toks = text.split(None, ncols - 1) if ncols == 2 else text.split()
        try:
            if len(toks) != ncols:
                raise InputError(f"expected {ncols} columns ({cols}), got {len(toks)}", file, line)
            i = _int(toks[0], file, line, "image id")
            if i in out:
                raise InputError(f"duplicate entry for image id {i} (first at line {out[i][1]})", file, line)
            if ids is not None and i not in ids:
                raise InputError(f"unknown image id {i} (not in images.txt)", file, line)
        except InputError as e:
            log.bad(e)
            continue
        out[i] = (toks[1:], line)
    return out


def _split_table(root: Path, split: str, ids: set[int], log: SkipLog) -> tuple[Path, dict[int, bool]]:
    """``train_test_split.txt`` as ``{image id: is_train}``; ids of bad rows leave ``ids``."""
    split_file = root / "train_test_split.txt"
    is_train: dict[int, bool] = {}
    if split != "all" or split_file.is_file():
        for i, (toks, line) in _id_table(
            split_file, "CUB train_test_split.txt", 2, "id, is_train", log, ids
        ).items():
            if toks[0].strip() not in ("0", "1"):
                log.bad(InputError(f"is_train must be 0 or 1, got {toks[0]!r}", split_file, line))
                ids.discard(i)
                continue
            is_train[i] = toks[0].strip() == "1"
    return split_file, is_train


def _class_table(
    root: Path, classes: list[tuple[int, int]] | None, ids: set[int], log: SkipLog
) -> tuple[Path, dict[int, int]]:
    """``image_class_labels.txt`` as ``{image id: class id}``; ids of bad rows leave ``ids``."""
    class_file = root / "image_class_labels.txt"
    class_of: dict[int, int] = {}
    if classes is not None or class_file.is_file():
        for i, (toks, line) in _id_table(
            class_file, "CUB image_class_labels.txt", 2, "id, class", log, ids
        ).items():
            try:
                class_of[i] = _int(toks[0], class_file, line, "class id")
            except InputError as e:
                log.bad(e)
                ids.discard(i)
    return class_file, class_of


def _box_table(root: Path, off: float, ids: set[int], log: SkipLog) -> dict[int, Box]:
    """``bounding_boxes.txt`` (``x y w h``) as ``{image id: (x0, y0, x1, y1)}``; ids of bad rows leave ``ids``."""
    box_file = root / "bounding_boxes.txt"
    boxes: dict[int, Box] = {}
    if box_file.is_file():
        for i, (toks, line) in _id_table(
            box_file, "CUB bounding_boxes.txt", 5, "id, x, y, w, h", log, ids
        ).items():
            try:
                x, y, w, h = parse_numbers(toks, box_file, line, "box value")
                if w <= 0 or h <= 0:
                    raise InputError(
                        f"box width and height must be positive, got w={w:g} h={h:g}", box_file, line
                    )
            except InputError as e:
                log.bad(e)
                ids.discard(i)
                continue
            boxes[i] = (float(x - off), float(y - off), float(x + w - off), float(y + h - off))
    return boxes


def _part_names(parts_file: Path) -> list[str]:
    """Part names from ``parts/parts.txt`` (ids must run 1, 2, 3, ...); spaces become ``_``."""
    names: list[str] = []
    for line, text in read_lines(parts_file, "CUB parts/parts.txt"):
        toks = text.split(None, 1)
        if len(toks) != 2:
            raise InputError(f"expected 2 columns (part id, name), got {len(toks)}", parts_file, line)
        pid = _int(toks[0], parts_file, line, "part id")
        if pid != len(names) + 1:
            raise InputError(
                f"part ids must run 1, 2, 3, ...; expected {len(names) + 1}, got {pid}", parts_file, line
            )
        names.append("_".join(toks[1].split()))
    if not names:
        raise InputError("no parts listed", parts_file)
    return names


def _parse_loc(
    toks: list[str], locs_file: Path, line: int, images: dict, k: int, got: dict[tuple[int, int], int]
) -> tuple[int, int, float, float]:
    """``(image id, part id, x, y)`` of one ``part_locs.txt`` row, checked."""
    if len(toks) != 5:
        raise InputError(
            f"expected 5 columns (image_id, part_id, x, y, visible), got {len(toks)}", locs_file, line
        )
    i = _int(toks[0], locs_file, line, "image id")
    pid = _int(toks[1], locs_file, line, "part id")
    if i not in images:
        raise InputError(f"unknown image id {i} (not in images.txt)", locs_file, line)
    if not 1 <= pid <= k:
        raise InputError(f"part id {pid} out of range 1..{k}", locs_file, line)
    if (i, pid) in got:
        raise InputError(
            f"duplicate entry for image {i}, part {pid} (first at line {got[(i, pid)]})",
            locs_file,
            line,
        )
    x, y = parse_numbers(toks[2:4], locs_file, line)
    if toks[4] not in ("0", "1"):
        raise InputError(f"visible must be 0 or 1, got {toks[4]!r}", locs_file, line)
    return i, pid, x, y


@dataclass
class _PartLocs:
    """Every image's part points (``xy`` ``(K, 2)``, ``vis`` ``(K,)``) and its first row in ``part_locs.txt``."""

    xy: dict[int, np.ndarray]
    vis: dict[int, np.ndarray]
    first_line: dict[int, int]


def _part_locs(locs_file: Path, images: dict, k: int, off: float, log: SkipLog) -> _PartLocs:
    """Read ``parts/part_locs.txt``; unlisted parts stay invisible at (0, 0), bad rows go to ``log``."""
    locs = _PartLocs({i: np.zeros((k, 2), np.float64) for i in images}, {i: np.zeros(k, bool) for i in images}, {})
    got: dict[tuple[int, int], int] = {}
    for line, text in read_lines(locs_file, "CUB parts/part_locs.txt"):
        toks = text.split()
        try:
            i, pid, x, y = _parse_loc(toks, locs_file, line, images, k, got)
        except InputError as e:
            log.bad(e)
            continue
        got[(i, pid)] = line
        locs.first_line.setdefault(i, line)
        locs.xy[i][pid - 1] = (x - off, y - off)
        locs.vis[i][pid - 1] = toks[4] == "1"
    return locs


@dataclass
class _Selection:
    """What ``?split=`` and ``?classes=`` keep, from ``train_test_split.txt`` and ``image_class_labels.txt``."""

    split: str
    split_file: Path
    is_train: dict[int, bool]
    classes: list[tuple[int, int]] | None
    class_file: Path
    class_of: dict[int, int]

    def __call__(self, i: int, log: SkipLog) -> bool:
        """Whether image ``i`` is kept; an image the options need a missing entry for goes to ``log``."""
        if self.split != "all":
            if i not in self.is_train:
                log.bad(InputError(f"image id {i} has no train/test entry", self.split_file))
                return False
            if self.is_train[i] != (self.split == "train"):
                return False
        if self.classes is not None:
            if i not in self.class_of:
                log.bad(InputError(f"image id {i} has no class entry", self.class_file))
                return False
            if not in_ranges(self.class_of[i], self.classes):
                return False
        return True


def read_cub(path: Path, options: dict, log: SkipLog) -> LandmarkIndex:
    """Read ``cub:PATH``: one record per image of ``images.txt`` that the tables and options keep."""
    root = _find_root(path)
    split = pop_choice(options, "split", "all", ("all", "train", "test"))
    classes = pop_ranges(options, "classes")
    off = float(pop_int(options, "one_based", 0, (0, 1)))

    images_file = root / "images.txt"
    images = _id_table(images_file, "CUB images.txt", 2, "id, path", log)
    ids = set(images)  # ids still usable; a bad row in any table removes its id
    split_file, is_train = _split_table(root, split, ids, log)
    class_file, class_of = _class_table(root, classes, ids, log)
    boxes = _box_table(root, off, ids, log)
    locs_file = root / "parts" / "part_locs.txt"
    names = _part_names(root / "parts" / "parts.txt")
    locs = _part_locs(locs_file, images, len(names), off, log)

    keep = _Selection(split, split_file, is_train, classes, class_file, class_of)
    records = []
    for i in sorted(images):
        if i not in ids or not keep(i, log):
            continue
        (rel,), line = images[i]
        meta = {"id": i, "class": class_of.get(i), "is_train": is_train.get(i)}
        # `where` points at the image's first part row, where a far-off point would come from.
        where, wline = (locs_file, locs.first_line[i]) if i in locs.first_line else (images_file, line)
        rec = make_record(
            root / "images" / rel.strip(),
            locs.xy[i],
            names,
            where,
            wline,
            visible=locs.vis[i],
            box=boxes.get(i),
            crop="whole",
            meta=meta,
        )
        records.append(rec)
    return LandmarkIndex("cub", path, tuple(names), records)


READER = ReaderInfo(
    kind="cub",
    fn=read_cub,
    help="CUB-200-2011 birds, 15 parts (PATH = the CUB_200_2011 folder or one containing it)",
    options={
        "split": "all (default) | train | test (train_test_split.txt)",
        "classes": "inclusive class id range(s), e.g. 1-50",
        "one_based": "0 (default): keep coordinates as given; 1: subtract 1",
    },
)
