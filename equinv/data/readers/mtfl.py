"""MTFL (``mtfl``) and CUHK CNN_FacePoint (``facepoint``) 5-point face lists.

MTFL list (``training.txt`` / ``testing.txt``), official format: a leading space, backslash paths, CRLF::

     lfw_5590\\Aaron_Eckhart_0001.jpg x1 x2 x3 x4 x5 y1 y2 y3 y4 y5 gender smile glasses pose

(the 4 attributes are optional). CNN_FacePoint list (``cnn_facepoint_lists/*ImageList.txt``)::

    lfw_5590\\Aaron_Eckhart_0001.jpg left right top bottom x1 y1 x2 y2 x3 y3 x4 y4 x5 y5

Note the box order (left, right, top, bottom) and the interleaved points. Points in both: left eye,
right eye, nose, left mouth corner, right mouth corner (image left/right).

Coordinate origin: MTFL lists are 1-based (the reference code subtracts 1 for MTFL/AFLW lists), so
``mtfl`` subtracts 1 by default (``?one_based=0`` keeps them). The CNN_FacePoint lists hold the same
annotations exactly 1 px lower than ``training.txt`` (checked on all 10,000 shared faces), i.e. they are
already 0-based: ``facepoint`` defaults to ``one_based=0``. Where images were downscaled after
annotation (``<folder>_scale.txt`` beside the list: ``relpath factor``, e.g. ``net_7876_scale.txt``), the
1-based offset is 1 px of the *original* image, so ``factor`` px is subtracted, not 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from equinv.data.reader_info import ReaderInfo
from equinv.data.readers.common import norm_rel, pop_int, read_lines
from equinv.data.sample import Box, LandmarkIndex, make_record, parse_numbers
from equinv.errors import InputError, SkipLog

NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
EYES = (0, 1)
#: Valid values of the MTFL attributes (gender 1 male / 2 female, smile and glasses 1 yes / 2 no,
#: pose 1..5 from left profile to right profile).
ATTRIBUTES = {"gender": (1, 2), "smile": (1, 2), "glasses": (1, 2), "pose": (1, 2, 3, 4, 5)}
FACEPOINT_DIR = "cnn_facepoint_lists"


def _list_file(path: Path, options: dict, default: str, what: str) -> Path:
    """The list file of a spec: PATH itself, or ``PATH/<list option>``."""
    name = options.pop("list", None)
    if path.is_file():
        if name is not None:
            raise InputError(
                f"option list={name!r} needs PATH to be a folder, but it is the file itself", path
            )
        return path
    f = path / (name or default)
    if not f.is_file():
        raise InputError(f"{what} not found (expected {f.name} in {f.parent}; choose one with ?list=)", f)
    return f


def _is_aflw(rel: str) -> bool:
    return "aflw" in rel.split("/")[:-1]


def _one_based(options: dict, default: int) -> float:
    return float(pop_int(options, "one_based", default, (0, 1)))


def _scales(folder: Path, log: SkipLog) -> dict[str, float]:
    """Per-image downscale factors from ``*_scale.txt`` files in ``folder`` (``relpath factor``)."""
    out: dict[str, float] = {}
    for f in sorted(folder.glob("*_scale.txt")):
        for line, text in read_lines(f, "image scale list"):
            toks = text.split()
            try:
                if len(toks) != 2:
                    raise InputError(
                        f"expected 2 columns (image path, scale factor), got {len(toks)}", f, line
                    )
                (v,) = parse_numbers(toks[1:], f, line, "scale factor")
                if v <= 0:
                    raise InputError(f"scale factor must be positive, got {toks[1]}", f, line)
            except InputError as e:
                log.bad(e)
                continue
            out[norm_rel(toks[0])] = float(v)
    return out


def _parse_facepoint_row(toks: list[str], file: Path, line: int, off: float) -> tuple[str, Box, np.ndarray]:
    if len(toks) != 15:
        raise InputError(
            f"expected 15 columns (path, left right top bottom, 10 interleaved coordinates), got {len(toks)}",
            file,
            line,
        )
    b = parse_numbers(toks[1:5], file, line, "face box value")
    left, right, top, bottom = b - off
    if not (left < right and top < bottom):
        raise InputError(
            "face box must have left < right and top < bottom "
            f"(order: left right top bottom), got {' '.join(toks[1:5])}",
            file,
            line,
        )
    xy = parse_numbers(toks[5:15], file, line).reshape(5, 2) - off
    return toks[0].replace("\\", "/"), (float(left), float(top), float(right), float(bottom)), xy


def _facepoint_boxes(folder: Path, log: SkipLog, off: float = 0.0) -> dict[str, Box]:
    """Face boxes of every ``cnn_facepoint_lists/*ImageList.txt`` under ``folder``, by normalised path.

    The boxes are in the lists' own (0-based) frame, whatever ``one_based`` the MTFL list uses."""
    boxes: dict[str, Box] = {}
    d = folder / FACEPOINT_DIR
    if not d.is_dir():
        return boxes
    for f in sorted(d.glob("*ImageList.txt")):
        for line, text in read_lines(f, "CNN_FacePoint list"):
            try:
                rel, box, _ = _parse_facepoint_row(text.split(), f, line, off)
            except InputError as e:
                log.bad(e)
                continue
            boxes.setdefault(norm_rel(rel), box)
    return boxes


def read_mtfl(path: Path, options: dict, log: SkipLog) -> LandmarkIndex:
    """The MTFL 5-point list ``path`` (``training.txt``, ``testing.txt`` or ``?list=``): face-box crops (landmark-box
    crops where no box is known, whole AFLW crops)."""
    list_file = _list_file(path, options, "training.txt", "MTFL list file")
    off = _one_based(options, 1)
    base = list_file.parent
    boxes = _facepoint_boxes(base, log)
    scales = _scales(base, log) if off else {}
    records = []
    seen: dict[str, int] = {}
    for line, text in read_lines(list_file, "MTFL list file"):
        toks = text.split()
        try:
            if len(toks) not in (15, 11):
                raise InputError(
                    "expected 15 columns (path, 10 coordinates, 4 attributes) or 11 (path, 10 coordinates), "
                    f"got {len(toks)}",
                    list_file,
                    line,
                )
            rel = toks[0].replace("\\", "/")
            key = norm_rel(rel)
            if key in seen:
                raise InputError(f"duplicate entry for {rel} (first at line {seen[key]})", list_file, line)
            v = parse_numbers(toks[1:11], list_file, line) - off * scales.get(key, 1.0)
            xy = np.stack([v[0:5], v[5:10]], axis=1)
            meta: dict = {}
            if len(toks) == 15:
                a = parse_numbers(toks[11:15], list_file, line, "attribute")
                for (name, allowed), val in zip(ATTRIBUTES.items(), a, strict=True):
                    if val not in allowed:
                        raise InputError(
                            f"attribute {name} must be one of {', '.join(map(str, allowed))}, got {val:g}",
                            list_file,
                            line,
                        )
                    meta[name] = int(val)
            box = None if _is_aflw(key) else boxes.get(key)
            crop = "whole" if _is_aflw(key) else ("box" if box is not None else "landmarks")
            rec = make_record(base / rel, xy, NAMES, list_file, line, box=box, crop=crop, meta=meta)
        except InputError as e:
            log.bad(e)
            continue
        seen[key] = line
        records.append(rec)
    return LandmarkIndex("mtfl", path, NAMES, records, eyes=EYES)


MTFL_READER = ReaderInfo(
    kind="mtfl",
    fn=read_mtfl,
    help="MTFL 5-point face list (PATH = folder with the list, or the list file)",
    options={
        "list": "list file inside PATH (default training.txt; testing.txt for the AFLW test)",
        "one_based": "1 (default): 1-based coordinates, subtract 1 (times any *_scale.txt factor); 0: keep",
    },
)


def _image_root(list_file: Path, spec_path: Path, first_rel: str | None) -> Path:
    """Folder the image paths of a CNN_FacePoint list are relative to (the MTFL root)."""
    cands = []
    if spec_path.is_dir():
        cands.append(spec_path)
    cands += [list_file.parent, list_file.parent.parent]
    if first_rel is not None:
        for c in cands:
            if (c / first_rel).is_file():
                return c
    if spec_path.is_dir():
        return spec_path
    return list_file.parent.parent if list_file.parent.name == FACEPOINT_DIR else list_file.parent


def read_facepoint(path: Path, options: dict, log: SkipLog) -> LandmarkIndex:
    """A CNN_FacePoint 5-point list with face boxes (``?list=``, default the training list)."""
    list_file = _list_file(path, options, f"{FACEPOINT_DIR}/trainImageList.txt", "CNN_FacePoint list file")
    off = _one_based(options, 0)
    rows = []
    seen: dict[str, int] = {}
    for line, text in read_lines(list_file, "CNN_FacePoint list file"):
        try:
            rel, box, xy = _parse_facepoint_row(text.split(), list_file, line, off)
            key = norm_rel(rel)
            if key in seen:
                raise InputError(f"duplicate entry for {rel} (first at line {seen[key]})", list_file, line)
        except InputError as e:
            log.bad(e)
            continue
        seen[key] = line
        rows.append((line, rel, box, xy))
    root = _image_root(list_file, path, rows[0][1] if rows else None)
    records = [
        make_record(root / rel, xy, NAMES, list_file, line, box=box, crop="box", meta={})
        for line, rel, box, xy in rows
    ]
    return LandmarkIndex("facepoint", path, NAMES, records, eyes=EYES)


FACEPOINT_READER = ReaderInfo(
    kind="facepoint",
    fn=read_facepoint,
    help="CNN_FacePoint 5-point list with face boxes (PATH = MTFL folder, or the list file)",
    options={
        "list": "list file inside PATH (default cnn_facepoint_lists/trainImageList.txt)",
        "one_based": "0 (default): coordinates are already 0-based; 1: subtract 1",
    },
)
