"""Data of the predictions view, from an ``equinv predict`` output.

The file (fixed by the predict command's issue)::

    {"model": ..., "landmarks": [names],
     "images": [{"path": ..., "points": [[x, y], ...], "confidence": [...], "true": [[x, y], ...]}, ...],
     "errors": [...]}

Points are pixels of each input image (x right, y down, pixel centres at integers); ``confidence`` and
``true`` are optional (``true`` only for labelled input; a ``null`` true point is not annotated), as is
``errors`` (one number or ``null`` per image, in the predict command's unit). Without ``errors`` an
image's error is the mean pixel distance of its predicted to its true points.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from equinv.errors import InputError


def _points(v, k: int, where: str, path: Path, nullable: bool = False) -> list:
    ok = isinstance(v, list) and len(v) == k
    if ok:
        for p in v:
            if p is None and nullable:
                continue
            if not (isinstance(p, list) and len(p) == 2 and all(_finite(c) for c in p)):
                ok = False
                break
    if not ok:
        raise InputError(f"{where} must be {k} [x, y] pairs of finite numbers (one per landmark)", path)
    return v


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _image_path(text, where: str, path: Path) -> Path:
    if not isinstance(text, str) or not text:
        raise InputError(f"{where}.path must be a file name", path)
    p = Path(text)
    # relative paths: as predict wrote them (from its working directory), else beside the JSON file
    for cand in ([p] if p.is_absolute() else [p, path.parent / p]):
        if cand.is_file():
            return cand
    raise InputError(f"{where}: image not found: {text}", path)


def read(path: str | Path) -> dict:
    """Read and check a predictions file; :class:`InputError` names the file (and line) at fault."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such predictions file", path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON: {e.msg}", path, e.lineno) from None
    except UnicodeDecodeError:
        raise InputError("not a UTF-8 JSON file", path) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise InputError('not a predictions file: expected {"landmarks": [...], "images": [...]}', path)
    images = doc["images"]
    if not images:
        raise InputError("no images in the predictions file", path)
    k = len(images[0].get("points") or []) if isinstance(images[0], dict) else 0
    names = doc.get("landmarks")
    if names is None:
        names = [f"#{i + 1}" for i in range(k)]
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names) and names):
        raise InputError("landmarks must be a non-empty list of names", path)
    k = len(names)
    errors = doc.get("errors")
    if errors is not None and not (isinstance(errors, list) and len(errors) == len(images)
                                   and all(e is None or _finite(e) for e in errors)):
        raise InputError(f"errors must hold one number (or null) per image ({len(images)})", path)
    items = []
    for i, im in enumerate(images):
        where = f"images[{i}]"
        if not isinstance(im, dict):
            raise InputError(f"{where} must be an object", path)
        item = {"path": str(_image_path(im.get("path"), where, path)),
                "points": _points(im.get("points"), k, f"{where}.points", path)}
        conf = im.get("confidence")
        if conf is not None and not (isinstance(conf, list) and len(conf) == k and all(_finite(c) for c in conf)):
            raise InputError(f"{where}.confidence must hold {k} numbers", path)
        item["confidence"] = conf
        item["true"] = None if im.get("true") is None else _points(im["true"], k, f"{where}.true", path, True)
        item["error"] = errors[i] if errors is not None else None
        items.append(item)
    return {"model": str(doc.get("model", "")), "landmarks": names, "items": items,
            "error_unit": doc.get("error_unit") or ("as in the file's errors" if errors is not None else None)}


def landmark_errors(item: dict) -> list | None:
    """Pixel distance of every predicted point to its true point (``None`` where not annotated)."""
    if item["true"] is None:
        return None
    return [None if t is None else round(math.dist(p, t), 3) for p, t in zip(item["points"], item["true"], strict=True)]


def build(path: str | Path, limit: int = 24, thumb: int = 480, bins: int = 20) -> tuple[dict, dict]:
    """The predictions payload (worst ``limit`` images first, a histogram over all) and its image files.

    Returns ``(payload, {relative path: (H, W, 3) uint8})``; images are resized to at most ``thumb`` px
    on their longer side (points stay in the input image's own pixels; the page scales them).
    """
    from PIL import Image

    from equinv.data.image_io import load_rgb

    if limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    doc = read(path)
    items = doc["items"]
    for it in items:
        it["lm_errors"] = landmark_errors(it)
        if it["error"] is None and it["lm_errors"] is not None:
            d = [e for e in it["lm_errors"] if e is not None]
            it["error"] = round(float(np.mean(d)), 4) if d else None
    if doc["error_unit"] is None and any(it["error"] is not None for it in items):
        doc["error_unit"] = "px, mean distance to the true points"
    # worst first; images without an error last, in file order (a stable sort)
    order = sorted(range(len(items)), key=lambda i: (items[i]["error"] is None, -(items[i]["error"] or 0.0)))
    errs = np.array([it["error"] for it in items if it["error"] is not None], np.float64)
    counts, edges = np.histogram(errs, bins=bins) if errs.size else (np.zeros(0, int), np.zeros(0))
    files, shown = {}, []
    for rank, i in enumerate(order[:limit]):
        it = dict(items[i])
        img = load_rgb(it["path"])
        h, w = img.shape[:2]
        scale = min(1.0, thumb / max(h, w))
        if scale < 1.0:
            img = np.asarray(Image.fromarray(img).resize((round(w * scale), round(h * scale)), Image.BILINEAR))
        it.update(file=f"img/pred_{rank:04d}.jpg", w=w, h=h, name=Path(it["path"]).name, index=i,
                  bin=None if it["error"] is None or not errs.size
                  else int(min(np.searchsorted(edges, it["error"], side="right") - 1, len(counts) - 1)))
        files[it["file"]] = img
        shown.append(it)
    payload = {"model": doc["model"], "landmarks": doc["landmarks"], "error_unit": doc["error_unit"],
               "n_total": len(items), "items": shown,
               "histogram": {"counts": counts.tolist(), "edges": np.round(edges, 6).tolist()}}
    return payload, files
