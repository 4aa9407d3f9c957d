"""Inputs of ``equinv predict`` and :meth:`LandmarkModel.predict`: what to read, and how each becomes a view.

``collect`` turns command-line inputs (image files, folders searched recursively, dataset specs) into a list
of :class:`Item` — paths and, for a spec, its annotation record (protocol crop and true landmarks) — without
reading a pixel; :class:`ViewStream` decodes and frames them one by one for a ``DataLoader``, so any number of
images streams through in bounded memory. Framing rules: :mod:`equinv.landmarks.framing`.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from equinv.data.image_io import IMAGE_SUFFIXES, load_rgb
from equinv.data.preprocess import Preprocess, canvas_box, resample
from equinv.data.sample import Record
from equinv.errors import InputError
from equinv.landmarks.framing import Box, box_canvas, norm_to_view, plain_box, view_to_source


@dataclass
class Item:
    """One input image: its path, the record of its dataset spec (``None`` for a plain image), a user box."""

    path: Path
    record: Record | None = None
    box: Box | None = None
    kind: str | None = None


@dataclass
class Frame:
    """Where a view came from: the canvas box in the input image and the preprocessing."""

    box: Box
    pre: Preprocess

    def to_source(self, norm: np.ndarray) -> np.ndarray:
        """Normalised ``[-1, 1]`` view points → input-image pixels."""
        return view_to_source(norm_to_view(norm, self.pre.size), self.box, self.pre)


def read_boxes(path: str | Path) -> dict[str, Box]:
    """``--boxes`` CSV (``path,x0,y0,x1,y1`` per line, an optional header) → ``{resolved path: box}``."""
    p = Path(path)
    if not p.is_file():
        raise InputError("boxes file not found", p)
    out: dict[str, Box] = {}
    with open(p, newline="", encoding="utf-8") as fh:
        for line, row in enumerate(csv.reader(fh), start=1):
            if not row or (line == 1 and row[0].strip().lower() == "path"):
                continue
            if len(row) != 5:
                raise InputError(f"expected path,x0,y0,x1,y1, got {len(row)} columns", p, line)
            try:
                x0, y0, x1, y1 = (float(v) for v in row[1:])
            except ValueError:
                raise InputError("box coordinates must be numbers", p, line) from None
            if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
                raise InputError(f"box must be finite with x1 > x0 and y1 > y0, got {row[1:]}", p, line)
            key = str((p.parent / row[0].strip()).resolve()) if not Path(row[0].strip()).is_absolute() \
                else str(Path(row[0].strip()).resolve())
            out[key] = (x0, y0, x1, y1)
    return out


def _folder(path: Path) -> list[Path]:
    files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError("no images in this folder", path)
    return files


def collect(inputs: list[str], boxes: dict[str, Box] | None = None) -> list[Item]:
    """Every image of ``inputs`` (files, folders recursively, ``KIND:PATH`` specs), in the order given."""
    from equinv.data.spec import parse_spec, read_index

    items: list[Item] = []
    boxes = boxes or {}
    for text in inputs:
        p = Path(text)
        if p.is_dir():
            items += [Item(f, box=boxes.get(str(f.resolve()))) for f in _folder(p)]
        elif p.is_file():
            items.append(Item(p, box=boxes.get(str(p.resolve()))))
        elif ":" in text and not p.exists():
            index = read_index(parse_spec(text))
            items += [Item(Path(r.path), r, kind=index.kind) for r in index.records]
        else:
            raise InputError("no such image, folder or dataset spec", text)
    if not items:
        raise InputError("no input images")
    return items


def canvas_of(image: np.ndarray, item: Item, pre: Preprocess, crop: str) -> Box:
    """The canvas box of ``item`` (decoded ``image``) under the model's preprocessing ``pre``."""
    h, w = image.shape[:2]
    if item.record is not None:
        return canvas_box(item.record, (w, h), pre)
    if item.box is not None:
        return box_canvas(item.box, w, h, pre, crop)
    return plain_box(w, h, pre, crop)


def view_of(image: np.ndarray, box: Box, pre: Preprocess) -> torch.Tensor:
    """The ``(3, S, S)`` uint8 view of ``image`` through the canvas ``box``."""
    canvas = resample(image, box, pre.canvas)
    m = pre.margin
    return torch.from_numpy(np.ascontiguousarray(canvas[m : m + pre.size, m : m + pre.size])).permute(2, 0, 1)


class ViewStream(torch.utils.data.Dataset):
    """Decodes and frames :class:`Item` ``i`` on demand: ``{"view", "box", "index"}`` or ``{"error", "index"}``."""

    def __init__(self, items: list[Item], pre: Preprocess, crop: str, skip_bad: bool = False):
        self.items, self.pre, self.crop, self.skip_bad = items, pre, crop, skip_bad

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        item = self.items[i]
        try:
            image = load_rgb(item.path)
        except InputError as e:
            if not self.skip_bad:
                raise
            return {"index": i, "error": str(e)}
        box = canvas_of(image, item, self.pre, self.crop)
        return {"index": i, "view": view_of(image, box, self.pre), "box": box}


def collate(batch: list[dict]) -> list[dict]:
    """Keep the items as they are (views are stacked by the consumer, errors pass through)."""
    return batch


def arrays_of(images) -> list[np.ndarray]:
    """``(H, W, 3)`` uint8 arrays of paths, PIL images, arrays, or a float ``(N, 3, H, W)`` tensor in [0, 1]."""
    if torch.is_tensor(images):
        if images.dim() != 4 or images.shape[1] != 3:
            raise InputError(f"a tensor batch must be (N, 3, H, W), got {tuple(images.shape)}")
        x = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
        return [a for a in x.permute(0, 2, 3, 1).cpu().numpy()]
    if isinstance(images, str | Path) or hasattr(images, "mode") or isinstance(images, np.ndarray):
        images = [images]
    out = []
    for im in images:
        if isinstance(im, str | Path):
            out.append(load_rgb(im))
        elif hasattr(im, "mode"):  # a PIL image
            from equinv.data.image_io import _to_rgb

            out.append(_to_rgb(im))
        else:
            a = np.asarray(im)
            if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
                raise InputError(f"an image array must be (H, W, 3) uint8, got {a.shape} {a.dtype}")
            out.append(a)
    return out


def frame_arrays(arrays: list[np.ndarray], model, boxes=None) -> tuple[torch.Tensor, list[Frame]]:
    """Views ``(B, 3, S, S)`` uint8 of decoded images (whole images, or ``boxes``) and their frames."""
    pre, crop = model.preprocess, model.meta["framing"]["crop"]
    views, frames = [], []
    for i, a in enumerate(arrays):
        item = Item(Path("<array>"), box=None if boxes is None else tuple(float(v) for v in boxes[i]))
        box = canvas_of(a, item, pre, crop)
        views.append(view_of(a, box, pre))
        frames.append(Frame(box, pre))
    return torch.stack(views), frames
