"""``equinv predict``: landmarks of every input image, streamed to a JSON or CSV file (and overlays).

Points are written in each input image's own pixels (x right, y down, pixel centres at integers), with a
per-landmark flip-consistency confidence (:func:`equinv.landmarks.model.confidence`; ``confidence=False`` skips
it and the second network pass it costs). Images are decoded, framed
(:mod:`equinv.landmarks.framing`) and predicted batch by batch, and each result is written as soon as it is
known, so memory holds one batch whatever the number of images. Outputs are written to a temporary file and
renamed into place at the end; an existing output is only replaced with ``force``.

JSON: ``{"model", "landmarks": [names], "frame", "confidence", "images": [{"path", "points": [[x, y], ...],
"confidence": [...], "true": [[x, y] | null, ...] (labelled input only)}], "errors": [{"path", "error"}]}``.
CSV: a header, then one row per image: ``path, x0, y0, x1, y1, ..., conf0, ..., [true_x0, true_y0, ...], error``.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from equinv.errors import InputError
from equinv.landmarks.inputs import Frame, Item, ViewStream, collate, collect, read_boxes
from equinv.landmarks.model import LandmarkModel
from equinv.outputs import check_dir, check_file

FRAME = "pixels of each input image: x right, y down, 0-based, pixel centres at integers"


@dataclass
class PredictConfig:
    """What ``equinv predict`` does (see its ``--help``)."""

    inputs: list[str]
    out: str
    boxes: str | None = None
    overlay: str | None = None
    batch: int = 32
    workers: int = 0
    skip_bad: bool = False
    force: bool = False
    confidence: bool = True
    progress: bool = False


def _r(a) -> list:
    return np.round(np.asarray(a, np.float64), 2).tolist()


class _Writer:
    """A JSON or CSV result file written row by row under a temporary name, renamed by :meth:`close`."""

    def __init__(self, path: Path, model_dir: str, names: list[str], labelled: bool):
        self.path, self.fmt, self.labelled = path, path.suffix.lower(), labelled
        self.tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        self.fh = open(self.tmp, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed in close()/abort()
        self.errors, self.first = [], True
        if self.fmt == ".json":
            head = {"model": model_dir, "landmarks": names, "frame": FRAME,
                    "confidence": "1 / (1 + d / (0.05 * view side)), d = half the gap between the predictions of the "
                                  "view and of its mirror image, in view pixels; 1 = they agree"}
            self.fh.write(json.dumps(head)[:-1] + ', "images": [\n')
        else:
            self.csv = csv.writer(self.fh)
            cols = [f"{a}{k}" for k in range(len(names)) for a in ("x", "y")] + [f"conf{k}" for k in range(len(names))]
            if labelled:
                cols += [f"true_{a}{k}" for k in range(len(names)) for a in ("x", "y")]
            self.csv.writerow(["path", *cols, "error"])
            self.k = len(names)

    def write(self, entry: dict) -> None:
        """One image's result (``path``, ``points``, ``confidence``, optional ``true``)."""
        if self.fmt == ".json":
            self.fh.write(("" if self.first else ",\n") + json.dumps(entry))
        else:
            row = [entry["path"], *np.ravel(entry["points"]), *(entry["confidence"] or [""] * self.k)]
            if self.labelled:
                row += [("" if v is None else v) for p in (entry.get("true") or [None] * self.k)
                        for v in (p if p is not None else (None, None))]
            self.csv.writerow([*row, ""])
        self.first = False

    def error(self, path: str, message: str) -> None:
        """A skipped input (``--skip-bad``)."""
        self.errors.append({"path": path, "error": message})
        if self.fmt == ".csv":
            self.csv.writerow([path] + [""] * (3 * self.k + (2 * self.k if self.labelled else 0)) + [message])

    def close(self) -> Path:
        if self.fmt == ".json":
            self.fh.write('\n], "errors": ' + json.dumps(self.errors) + "}\n")
        self.fh.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self.fh.close()
        self.tmp.unlink(missing_ok=True)


def _check_out(out: Path, force: bool) -> None:
    check_file(out, "--out", force=force, suffixes=(".json", ".csv"))
    if not out.parent.exists():
        raise InputError("the folder of --out does not exist", out.parent)


def _entry(item: Item, points: np.ndarray, conf: np.ndarray | None) -> dict:
    e = {"path": str(item.path), "points": _r(points), "confidence": None if conf is None else _r(conf)}
    r = item.record
    if r is not None and r.num_landmarks:
        e["true"] = [_r(p) if v else None for p, v in zip(r.landmarks, r.visible, strict=True)]
    return e


def _overlay(directory: Path, i: int, item: Item, points: np.ndarray) -> None:
    from PIL import Image, ImageDraw

    from equinv.data.image_io import load_rgb
    from equinv.viz.contact_sheet import landmark_colour

    im = Image.fromarray(load_rgb(item.path))
    scale = min(1.0, 512 / max(im.size))
    if scale < 1:
        im = im.resize((round(im.size[0] * scale), round(im.size[1] * scale)), Image.Resampling.BILINEAR)
    draw, r = ImageDraw.Draw(im), max(2, round(max(im.size) / 120))
    for k, (x, y) in enumerate(points):
        cx, cy = (x + 0.5) * scale - 0.5, (y + 0.5) * scale - 0.5
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=landmark_colour(k), width=max(1, r // 2))
    im.save(directory / f"{i:06d}_{item.path.stem}.png")


def _batches(model: LandmarkModel, items: list[Item], cfg: PredictConfig):
    """``(item index, item, points, confidence)`` of every predicted image, and ``(index, item, error)`` of
    every skipped one, in input order."""
    crop = model.meta["framing"]["crop"].split(",")[0]
    stream = ViewStream(items, model.preprocess, crop, cfg.skip_bad)
    loader = torch.utils.data.DataLoader(stream, batch_size=cfg.batch, collate_fn=collate, num_workers=cfg.workers)
    for batch in loader:
        good = [b for b in batch if "error" not in b]
        if good:
            pts, conf = model.predict_views(torch.stack([b["view"] for b in good]), cfg.confidence)
        results = {b["index"]: (Frame(b["box"], model.preprocess).to_source(pts[j].numpy()),
                                None if conf is None else conf[j].numpy()) for j, b in enumerate(good)}
        for b in batch:
            yield (b["index"], items[b["index"]], *results[b["index"]]) if "error" not in b \
                else (b["index"], items[b["index"]], b["error"])


def run_predict(model: LandmarkModel, model_dir: str, cfg: PredictConfig) -> dict:
    """Predict every input; write ``cfg.out`` (and overlays); returns counts."""
    out = Path(cfg.out)
    _check_out(out, cfg.force)
    if cfg.overlay:
        check_dir(cfg.overlay, "--overlay")
    items = collect(cfg.inputs, read_boxes(cfg.boxes) if cfg.boxes else None)
    overlay = Path(cfg.overlay) if cfg.overlay else None
    if overlay is not None:
        overlay.mkdir(parents=True, exist_ok=True)
    labelled = any(it.record is not None and it.record.num_landmarks for it in items)
    writer = _Writer(out, model_dir, model.landmark_names, labelled)
    done = bad = 0
    try:
        for res in tqdm(_batches(model, items, cfg), total=len(items), desc="predict", unit="img",
                        disable=not cfg.progress):
            if len(res) == 3:
                writer.error(str(res[1].path), res[2])
                bad += 1
                continue
            i, item, points, conf = res
            writer.write(_entry(item, points, conf))
            if overlay is not None:
                _overlay(overlay, i, item, points)
            done += 1
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return {"images": done, "skipped": bad, "out": str(out)}
