"""COCO-style keypoint JSON (``coco``): ``images``, ``annotations`` (``keypoints`` as x, y, v triples),
``categories`` (with ``keypoints`` names). One record per annotation with at least one labelled point.

Keypoints with ``v > 0`` are visible; coordinates are used as given (COCO keypoints are 0-based
pixel positions). ``bbox`` ``[x, y, w, h]`` becomes the record's box and the crop rule is ``box``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from equinv.data.reader_info import ReaderInfo
from equinv.data.readers.common import pop_path, read_text
from equinv.data.sample import Box, LandmarkIndex, Record, make_record
from equinv.errors import InputError, SkipLog

_SIDE = {"left": "right", "right": "left", "l": "r", "r": "l"}
_PREFIX = (("near", "off"), ("off", "near"))


def _tokens(name: str) -> list[str]:
    """Lower-case tokens of a keypoint name, splitting camelCase and letter/digit boundaries.

    ``forelegL1`` → ``foreleg l 1``; ``L_F_Elbow`` → ``l f elbow``; ``left front paw`` as is.
    """
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    s = re.sub(r"([A-Za-z])(\d)", r"\1 \2", s)
    s = re.sub(r"(\d)([A-Za-z])", r"\1 \2", s)
    return [t for t in re.split(r"[^a-z0-9]+", s.lower()) if t]


def keypoint_flip_permutation(names: Sequence[str]) -> tuple[int, ...]:
    """Mirror permutation for animal/pose keypoint names.

    Extends :func:`equinv.data.sample.flip_permutation` to the spellings of common keypoint sets:
    ``left_eye``/``L_Eye``/``eyeL``/``forelegL1``/``left front paw`` (left/right or L/R tokens, also
    glued to the end of a word) and horse ``Near…``/``Off…`` (near = the animal's left side). A name
    is only swapped with a counterpart that exists; anything not forming a mutual pair stays put.
    """
    toks = [_tokens(n) for n in names]
    keys = {" ".join(t): i for i, t in enumerate(toks)}
    compact = {"".join(t): i for i, t in enumerate(toks)}
    perm = list(range(len(names)))
    for i, t in enumerate(toks):
        j = keys.get(" ".join(_SIDE.get(x, x) for x in t))
        if j is None or j == i:
            c = "".join(t)
            for a, b in _PREFIX:
                if c.startswith(a) and len(c) > len(a):
                    j = compact.get(b + c[len(a) :])
                    break
        if j is not None:
            perm[i] = j
    for i, j in enumerate(perm):  # keep only mutual pairs
        if perm[j] != i:
            perm[i] = i
    return tuple(perm)


def _eyes(names: Sequence[str]) -> tuple[int, int] | None:
    found = {}
    for i, n in enumerate(names):
        t = set(_tokens(n))
        if "eye" in t:
            side = "left" if t & {"left", "l"} else ("right" if t & {"right", "r"} else None)
            if side and side not in found:
                found[side] = i
    return (found["left"], found["right"]) if len(found) == 2 else None


def _json_file(path: Path, options: dict) -> Path:
    choice = options.pop("json", None)
    if path.is_file():
        if choice is not None:
            raise InputError(
                f"option json={choice!r} needs PATH to be a folder, but it is the file itself", path
            )
        return path
    if choice is not None:
        f = Path(choice).expanduser()
        f = f if f.is_absolute() else path / f
        if not f.is_file():
            raise InputError("COCO keypoints JSON (?json=) not found", f)
        return f
    found = sorted(path.glob("*.json"))
    if not found:
        raise InputError("no *.json file in the folder (expected one COCO keypoints JSON)", path)
    if len(found) > 1:
        raise InputError(
            f"{len(found)} JSON files in the folder ({', '.join(f.name for f in found)}); "
            "pick one with ?json=",
            path,
        )
    return found[0]


def _is_id(v) -> bool:
    """A usable COCO id: an integer or a string (JSON lists and objects cannot key a table)."""
    return isinstance(v, int | str) and not isinstance(v, bool)


def _finite(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _load_json(jf: Path) -> dict:
    """The parsed JSON, checked to be an object with ``images``, ``annotations`` and ``categories`` lists."""
    text = read_text(jf, "COCO keypoints JSON")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"malformed JSON: {e.msg} (column {e.colno})", jf, e.lineno) from None
    if not isinstance(data, dict):
        raise InputError("expected a JSON object with images, annotations and categories", jf)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise InputError(f"missing or non-list {key!r} (not a COCO keypoints file?)", jf)
    return data


def _categories(data: dict, jf: Path, want: str | None) -> tuple[dict, tuple[str, ...]]:
    """``({category id: (name, keypoint names)}, keypoint names)`` of the categories read.

    Only categories with keypoint names count; ``want`` (``?category=``, a name or an id) picks one.
    All kept categories must share one keypoint list.
    """
    cats = {}
    for c in data["categories"]:
        if not isinstance(c, dict) or not _is_id(c.get("id")):
            raise InputError(f"category without an id (a number or a string): {str(c)[:60]}", jf)
        kps = c.get("keypoints")
        if kps:
            if not isinstance(kps, list) or not all(isinstance(k, str) for k in kps):
                raise InputError(
                    f"category {c.get('name', c['id'])!r}: keypoints must be a list of names", jf
                )
            cats[c["id"]] = (str(c.get("name", c["id"])), tuple(kps))
    if not cats:
        raise InputError("no category has keypoint names (categories[].keypoints)", jf)
    if want is not None:
        sel = {cid: v for cid, v in cats.items() if v[0] == want or str(cid) == want}
        if not sel:
            avail = ", ".join(sorted({v[0] for v in cats.values()}))
            raise InputError(f"no keypoint category {want!r} (option category=); categories: {avail}", jf)
        cats = sel
    lists = {v[1] for v in cats.values()}
    if len(lists) > 1:
        avail = ", ".join(sorted({v[0] for v in cats.values()}))
        raise InputError(
            f"categories have different keypoint lists; choose one with ?category=NAME ({avail})", jf
        )
    (names,) = lists
    return cats, names


def _images(data: dict, jf: Path, log: SkipLog) -> dict:
    """``{image id: image entry}``; entries without an id or file name, or with a repeated id, go to ``log``."""
    images = {}
    for im in data["images"]:
        if not isinstance(im, dict) or not _is_id(im.get("id")) or not isinstance(im.get("file_name"), str):
            log.bad(InputError(f"image entry without id or file_name: {str(im)[:60]}", jf))
            continue
        if im["id"] in images:
            log.bad(InputError(f"duplicate image id {im['id']}", jf))
            continue
        images[im["id"]] = im
    return images


def _keypoints(kp, aid, k: int, jf: Path) -> np.ndarray:
    """An annotation's ``keypoints`` (``3 k`` finite numbers) as a ``(k, 3)`` array of x, y, v."""
    if not isinstance(kp, list) or len(kp) != 3 * k:
        got = len(kp) if isinstance(kp, list) else type(kp).__name__
        raise InputError(
            f"annotation id {aid}: keypoints must be {3 * k} numbers (x, y, v for {k} points), got {got}",
            jf,
        )
    bad = [j for j, v in enumerate(kp) if not _finite(v)]
    if bad:
        raise InputError(
            f"annotation id {aid}: keypoint value {kp[bad[0]]!r} (position {bad[0] + 1}) is not a finite number",
            jf,
        )
    return np.asarray(kp, dtype=np.float64).reshape(k, 3)


def _box(bb, aid, jf: Path) -> Box | None:
    """COCO ``bbox`` ``[x, y, w, h]`` as ``(x0, y0, x1, y1)``; ``None`` when absent or empty."""
    if bb is None:
        return None
    if not (isinstance(bb, list) and len(bb) == 4 and all(_finite(v) for v in bb)):
        raise InputError(f"annotation id {aid}: bbox must be 4 numbers [x, y, w, h], got {bb!r}", jf)
    x, y, w, h = (float(v) for v in bb)
    if w < 0 or h < 0:
        raise InputError(f"annotation id {aid}: bbox width and height must be >= 0, got {bb!r}", jf)
    return (x, y, x + w, y + h) if w > 0 and h > 0 else None


def _visibility(arr: np.ndarray, ann: dict, aid, jf: Path) -> np.ndarray:
    """Which keypoints are labelled (``v > 0``); ``v`` must be 0, 1 or 2 and agree with ``num_keypoints``."""
    v = arr[:, 2]
    bad = np.flatnonzero(~np.isin(v, (0, 1, 2)))
    if bad.size:
        raise InputError(f"annotation id {aid}: keypoint {bad[0]} has visibility {v[bad[0]]:g} (must be 0, 1 or 2)",
                         jf)
    vis = v > 0
    nk = ann.get("num_keypoints")
    if nk is not None and (not isinstance(nk, int) or isinstance(nk, bool) or nk != int(vis.sum())):
        raise InputError(f"annotation id {aid}: num_keypoints {nk!r} but {int(vis.sum())} keypoints are labelled",
                         jf)
    return vis


@dataclass
class _Annotations:
    """Turns annotations of the chosen categories into records, rejecting repeated annotation ids."""

    jf: Path
    img_dir: Path
    cats: dict
    names: tuple[str, ...]
    images: dict
    all_cats: set = field(default_factory=set)  # every category id of the file, with keypoints or not
    seen: set = field(default_factory=set)

    def record(self, n: int, ann) -> Record | None:
        """The record of annotation number ``n``; ``None`` for another category or no labelled point."""
        jf = self.jf
        aid = ann.get("id", f"#{n}") if isinstance(ann, dict) else f"#{n}"
        if not isinstance(ann, dict):
            raise InputError(f"annotation {aid} is not an object", jf)
        if not _is_id(aid):
            raise InputError(f"annotation #{n}: annotation id {aid!r} is not a number or a string", jf)
        cid = ann.get("category_id")
        if cid is None:
            raise InputError(f"annotation id {aid}: no category_id", jf)
        if not _is_id(cid) or cid not in self.all_cats:
            raise InputError(f"annotation id {aid}: unknown category_id {cid!r}", jf)
        if cid not in self.cats:
            return None  # another (or a keypoint-less) category
        if aid in self.seen:
            raise InputError(f"duplicate annotation id {aid}", jf)
        self.seen.add(aid)
        if "keypoints" not in ann:
            raise InputError(f"annotation id {aid}: no keypoints (its category has keypoint names)", jf)
        arr = _keypoints(ann["keypoints"], aid, len(self.names), jf)
        vis = _visibility(arr, ann, aid, jf)
        if not vis.any():
            return None  # nothing labelled (COCO's num_keypoints 0): not a landmark sample
        if not _is_id(ann.get("image_id")) or ann["image_id"] not in self.images:
            raise InputError(f"annotation id {aid}: unknown image id {ann.get('image_id')!r}", jf)
        box = _box(ann.get("bbox"), aid, jf)
        im = self.images[ann["image_id"]]
        meta = {"annotation_id": aid, "image_id": im["id"], "category": self.cats[ann["category_id"]][0]}
        rec = make_record(
            self.img_dir / im["file_name"], arr[:, :2], self.names, jf, 0, visible=vis, box=box, crop="box", meta=meta
        )
        rec.where = f"{jf} (annotation id {aid})"
        return rec


def read_coco(path: Path, options: dict, log: SkipLog) -> LandmarkIndex:
    """Read ``coco:PATH``: one record per annotation with at least one labelled keypoint."""
    jf = _json_file(path, options)
    img_dir = pop_path(options, "images", jf.parent) or jf.parent
    want = options.pop("category", None)
    data = _load_json(jf)
    cats, names = _categories(data, jf, want)
    all_cats = {c["id"] for c in data["categories"]}  # _categories checked that each has an id
    anns = _Annotations(jf, img_dir, cats, names, _images(data, jf, log), all_cats)
    records = []
    for n, ann in enumerate(data["annotations"]):
        try:
            rec = anns.record(n, ann)
        except InputError as e:
            log.bad(e)
            continue
        if rec is not None:
            records.append(rec)
    return LandmarkIndex(
        "coco", path, names, records, flip_perm=keypoint_flip_permutation(names), eyes=_eyes(names)
    )


READER = ReaderInfo(
    kind="coco",
    fn=read_coco,
    help="COCO-style keypoints JSON (PATH = the .json, or a folder holding exactly one)",
    options={
        "json": "which .json in the PATH folder",
        "images": "image folder (default: the JSON's folder; relative paths are relative to it)",
        "category": "category name (or id) to read; required when categories differ in keypoints",
    },
)
