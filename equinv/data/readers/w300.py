"""300-W 68-point faces (``300w``): ``NAME.pts`` beside ``NAME.jpg|.jpeg|.png``, found recursively.

``.pts``: ``version: 1`` / ``n_points: 68`` / ``{`` / 68 lines ``x y`` / ``}`` (the header may be absent),
1-based pixel coordinates (1 is subtracted by default; ``?one_based=0`` keeps them). An optional
``boxes.csv`` at PATH (``file,x_min,y_min,x_max,y_max``, files relative to PATH, same frame as the
``.pts``) gives each face's ground-truth box; otherwise the tight landmark box is used, which is what
300-W's ``bb_ground_truth`` is.

Point order is iBUG's: jaw 0-16, the subject's right brow 17-21 then left brow 22-26 (image left to
right for a frontal face), nose bridge 27-30, nose base 31-35, right eye 36-41, left eye 42-47, outer
lips 48-59, inner lips 60-67. "Right"/"left" are the subject's, so the subject's right eye appears on
the image's left. Inter-ocular normalisation uses the outer eye corners 36 and 45.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from equinv.data.reader_info import ReaderInfo
from equinv.data.readers.common import norm_rel, pop_int, read_lines, read_text
from equinv.data.sample import Box, LandmarkIndex, make_record, parse_numbers
from equinv.errors import InputError, SkipLog

NAMES: tuple[str, ...] = (
    tuple(f"jaw_{i}" for i in range(17))
    + tuple(f"right_brow_{i}" for i in range(5))
    + tuple(f"left_brow_{i}" for i in range(5))
    + tuple(f"nose_bridge_{i}" for i in range(4))
    + tuple(f"nose_base_{i}" for i in range(5))
    + tuple(f"right_eye_{i}" for i in range(6))
    + tuple(f"left_eye_{i}" for i in range(6))
    + tuple(f"outer_lip_{i}" for i in range(12))
    + tuple(f"inner_lip_{i}" for i in range(8))
)
EYES = (36, 45)


def _mirror_pairs() -> list[tuple[int, int]]:
    pairs = [(i, 16 - i) for i in range(8)]  # jaw
    pairs += [(17 + i, 26 - i) for i in range(5)]  # brows
    pairs += [(31, 35), (32, 34)]  # nose base
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lips
    pairs += [(60, 64), (61, 63), (65, 67)]  # inner lips
    return pairs


def _flip_perm() -> tuple[int, ...]:
    perm = list(range(68))
    for a, b in _mirror_pairs():
        perm[a], perm[b] = b, a
    return tuple(perm)


#: The standard iBUG 68-point mirror permutation (0-based), an involution.
FLIP_PERM = _flip_perm()
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


def read_pts(path: Path, off: float = 1.0) -> tuple[np.ndarray, int]:
    """``(68, 2)`` 0-based points from a ``.pts`` file (``off`` is subtracted) and the line of the first.

    Errors name the file and line."""
    text = read_text(path, ".pts file")
    lines = [(i, ln.strip()) for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    if not lines:
        raise InputError("empty .pts file", path)
    n_expected = n_line = None
    body = lines
    if lines[0][1].lower().startswith("version"):
        i = 1
        while i < len(lines) and lines[i][1] != "{":
            ln, t = lines[i]
            key, sep, val = t.partition(":")
            if not sep:
                raise InputError(
                    f"expected 'key: value' or '{{' in the .pts header, got {t[:40]!r}", path, ln
                )
            if key.strip().lower() == "n_points":
                n_line = ln
                try:
                    n_expected = int(val)
                except ValueError:
                    raise InputError(f"n_points must be an integer, got {val.strip()!r}", path, ln) from None
            i += 1
        if i == len(lines):
            raise InputError("missing '{' after the .pts header", path, lines[-1][0])
        body = lines[i + 1 :]
        if not body or body[-1][1] != "}":
            raise InputError("missing closing '}'", path, lines[-1][0])
        body = body[:-1]
    if n_expected is not None and n_expected != len(NAMES):
        raise InputError(f"expected a 68-point file, n_points says {n_expected}", path, n_line)
    xy = np.empty((len(body), 2), dtype=np.float64)
    for k, (ln, t) in enumerate(body):
        toks = t.split()
        if len(toks) != 2:
            raise InputError(f"expected 2 columns (x y), got {len(toks)}", path, ln)
        xy[k] = parse_numbers(toks, path, ln)
    if len(body) != len(NAMES):
        where = body[-1][0] if body else lines[-1][0]
        raise InputError(f"expected 68 points, found {len(body)}", path, where)
    return xy - off, body[0][0]


def _read_boxes(f: Path, off: float, log: SkipLog) -> dict[str, Box]:
    boxes: dict[str, Box] = {}
    first: dict[str, int] = {}
    for line, text in read_lines(f, "300-W boxes file"):
        toks = [t.strip() for t in text.split(",")]
        if not first and toks[0].lower() == "file":  # header row
            continue
        try:
            if len(toks) != 5:
                raise InputError(
                    f"expected 5 columns (file,x_min,y_min,x_max,y_max), got {len(toks)}", f, line
                )
            x0, y0, x1, y1 = parse_numbers(toks[1:], f, line, "box value") - off
            if not (x0 < x1 and y0 < y1):
                raise InputError(f"box must have x_min < x_max and y_min < y_max, got {toks[1:]}", f, line)
            key = str(Path(norm_rel(toks[0])).with_suffix(""))
            if key in first:
                raise InputError(f"duplicate entry for {toks[0]} (first at line {first[key]})", f, line)
        except InputError as e:
            log.bad(e)
            continue
        first[key] = line
        boxes[key] = (float(x0), float(y0), float(x1), float(y1))
    return boxes


def read_300w(path: Path, options: dict, log: SkipLog) -> LandmarkIndex:
    """Every ``.pts`` file under ``path`` beside its image (68 points), with ``boxes.csv`` boxes when present."""
    off = float(pop_int(options, "one_based", 1, (0, 1)))
    subset = options.pop("subset", None)
    root = path if path.is_dir() else path.parent
    pts_files = [path] if path.is_file() else sorted(root.rglob("*.pts"))
    if subset is not None:
        prefix = norm_rel(subset).strip("/")
        pts_files = [
            p
            for p in pts_files
            if (r := norm_rel(p.relative_to(root).as_posix())) == prefix or r.startswith(prefix + "/")
        ]
    if not pts_files:
        extra = f" under subset {subset!r}" if subset is not None else ""
        raise InputError(f"no .pts files found{extra}", path)
    boxes_file = root / "boxes.csv"
    boxes = _read_boxes(boxes_file, off, log) if boxes_file.is_file() else {}
    records = []
    for p in pts_files:
        try:
            xy, first_line = read_pts(p, off)
        except InputError as e:
            log.bad(e)
            continue
        img = next((q for q in (p.with_suffix(e) for e in IMAGE_EXTS) if q.is_file()), p.with_suffix(".jpg"))
        rel = p.relative_to(root)
        box = boxes.get(str(Path(norm_rel(rel.as_posix())).with_suffix("")))
        source = "boxes.csv"
        if box is None:
            box = (float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()), float(xy[:, 1].max()))
            source = "landmarks"
        meta = {"subset": rel.parent.as_posix(), "box_source": source}
        records.append(make_record(img, xy, NAMES, p, first_line, box=box, crop="300w", meta=meta))
    return LandmarkIndex("300w", path, NAMES, records, flip_perm=FLIP_PERM, eyes=EYES)


READER = ReaderInfo(
    kind="300w",
    fn=read_300w,
    help="300-W 68-point .pts files beside their images (PATH = folder, searched recursively)",
    options={
        "subset": "only files under this folder of PATH, e.g. afw or helen/trainset",
        "one_based": "1 (default): .pts coordinates are 1-based, subtract 1; 0: keep them",
    },
)
