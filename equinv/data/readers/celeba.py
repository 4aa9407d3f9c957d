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

from pathlib import Path

import numpy as np

from equinv.data.image_io import image_size
from equinv.data.reader_info import ReaderInfo
from equinv.data.readers.common import in_ranges, pop_choice, pop_path, pop_ranges, read_lines
from equinv.data.readers.mtfl import EYES, NAMES
from equinv.data.sample import LandmarkIndex, make_record, parse_numbers
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


def read_celeba(path: Path, options: dict, log: SkipLog) -> LandmarkIndex:
    if path.is_file():
        list_file, root = path, path.parent.parent if path.parent.name == "Anno" else path.parent
    else:
        root = path
        list_file = _find(root, LIST_NAME, f"Anno/{LIST_NAME}") or root / LIST_NAME
    split = pop_choice(options, "split", "all", SPLITS)
    ids = pop_ranges(options, "ids")
    img_dir = pop_path(options, "images", root)
    if img_dir is None:
        img_dir = _find(root, *IMAGE_DIRS, *(f"Img/{d}" for d in IMAGE_DIRS))
        if img_dir is None:
            raise InputError(
                f"no CelebA image folder found (looked for {', '.join(IMAGE_DIRS)}; use ?images=)", root
            )
    elif not img_dir.is_dir():
        raise InputError("CelebA image folder (?images=) not found", img_dir)

    lines = read_lines(list_file, "CelebA landmark list")
    train = test = None
    if split in ("mafl_train", "not_mafl"):
        train, _ = _mafl_names(root, "training")
    if split in ("mafl_test", "not_mafl"):
        test, _ = _mafl_names(root, "testing")

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

    records = []
    seen: dict[str, int] = {}
    common: tuple[float, tuple[int, int]] | None = None  # (scale, size) of the first readable image
    pending = []
    for line, text in rows:
        toks = text.split()
        try:
            if len(toks) != 11:
                raise InputError(
                    f"expected 11 columns (file name, 10 coordinates), got {len(toks)}", list_file, line
                )
            name = toks[0]
            if name in seen:
                raise InputError(f"duplicate entry for {name} (first at line {seen[name]})", list_file, line)
            xy = parse_numbers(toks[1:], list_file, line).reshape(5, 2)
            stem = Path(name).stem
            num = int(stem) if stem.isdigit() else None
            if ids is not None:
                if num is None:
                    raise InputError(
                        f"cannot select ?ids= for {name}: the name is not a numeric id", list_file, line
                    )
                if not in_ranges(num, ids):
                    seen[name] = line
                    continue
            seen[name] = line
            if split == "mafl_train" and name not in train:
                continue
            if split == "mafl_test" and name not in test:
                continue
            if split == "not_mafl" and (name in train or name in test):
                continue
            img = img_dir / name
            if not img.is_file() and img.with_suffix(".png").is_file():
                img = img.with_suffix(".png")
            try:
                size = image_size(img)
            except InputError:
                size = None  # missing/corrupt: reported by validate_records, which reads the header again
            if size is not None:
                s = _scale_of(*size)
                if s is None:
                    raise InputError(
                        f"image {img} is {size[0]}x{size[1]}, "
                        "not a uniform scale of the 178x218 aligned frame",
                        list_file,
                        line,
                    )
                if common is None:
                    common = (s, size)
                elif size != common[1]:
                    raise InputError(
                        f"image {img} is {size[0]}x{size[1]} "
                        f"but the first image is {common[1][0]}x{common[1][1]}"
                        " (CelebA images must all have one size)",
                        list_file,
                        line,
                    )
            else:
                s = common[0] if common is not None else None  # fixed below once a size is known
            meta = {"scale": s, "id": num}
            if train is not None or test is not None:
                in_train, in_test = train is not None and name in train, test is not None and name in test
                meta["mafl"] = "train" if in_train else ("test" if in_test else None)
            rec = make_record(img, xy * (s or 1.0), NAMES, list_file, line, crop="celeba", meta=meta)
            if size is not None:
                rec.meta["size"] = size
            else:
                pending.append((rec, xy))
        except InputError as e:
            log.bad(e)
            continue
        records.append(rec)
    # Records whose image header could not be read (validate_records reports them) take the common scale.
    s = common[0] if common is not None else 1.0
    for rec, xy in pending:
        if rec.meta["scale"] is None:
            rec.meta["scale"] = s
            rec.landmarks = (xy * s).astype(np.float32)
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
