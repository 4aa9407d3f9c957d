"""Foreground masks for any dataset spec, cropped exactly as their images are.

Where a mask comes from (first that applies):

1. a ``masks=DIR`` option in the dataset spec (``cub:../data/CUB_200_2011?split=test&masks=/seg``);
   :func:`split_masks_option` removes it before the spec reaches its reader;
2. a folder given for every spec (``equinv eval segment --masks DIR``);
3. the dataset's own masks: the built-in ``synthetic`` kind writes ``00000_mask.png`` beside each image
   (``record.meta["mask"]``).

In a mask folder, an image's mask is found by the image's path relative to the dataset root with its
suffix replaced by ``.png``: ``ROOT/a/b/img.jpg`` → ``DIR/a/b/img.png``. When that file is absent the
same path with leading folders dropped is tried (``DIR/b/img.png``, then ``DIR/img.png``), so CUB's
``segmentations/`` folder (``segmentations/001.Black_footed_Albatross/x.png``) serves records under
``CUB_200_2011/images/001.Black_footed_Albatross/x.jpg``.

Mask files may be in any PIL mode and must have the size of their image. Foreground is

* ``1`` (bilevel) and ``P`` (palette): pixel value (palette index) > 0;
* 16-bit / 32-bit integer grey: value > half the type's range (65535 or 2³¹−1, as image decoding scales);
* ``F`` (float): value > 0.5;
* everything else (``L``, ``RGB``, ``LA``, ``RGBA``, ...): the grey level (PIL's ``L`` conversion,
  alpha ignored) > 127. CUB's soft masks (0, 51, ..., 255 = annotator agreement) thus keep pixels that
  most annotators marked.

The binary mask (0/255) then goes through the same crop box and the same bilinear resampling as its
image (:func:`equinv.data.preprocess.resample`), giving a soft *coverage* in 0..255 on the canvas; the
evaluated ground truth is the centre ``size × size`` view thresholded at coverage > 127.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from equinv.data.dataset import LandmarkDataset
from equinv.data.image_io import DECOMPRESSION_BOMBS
from equinv.data.preprocess import resample
from equinv.data.sample import LandmarkIndex, Record
from equinv.data.spec import DatasetSpec, parse_spec
from equinv.errors import InputError

#: The spec option that names a mask folder for one dataset.
MASKS_OPTION = "masks"


def split_masks_option(spec: str) -> tuple[str, str | None]:
    """``(spec without its masks= option, the option's folder or None)``; other options are kept in order."""
    parsed = parse_spec(spec)
    found = [v for k, v in parsed.options if k == MASKS_OPTION]
    if not found:
        return spec, None
    if not found[-1]:
        raise InputError(f"dataset spec {spec!r}: masks= needs a folder")
    rest = tuple((k, v) for k, v in parsed.options if k != MASKS_OPTION)
    return str(DatasetSpec(parsed.kind, parsed.path, rest)), found[-1]


def _relative(record: Record, root: Path) -> Path:
    try:
        rel = record.path.resolve().relative_to(Path(root).resolve())
    except ValueError:
        rel = Path(record.path.name)  # an image outside the root (e.g. a list with absolute paths)
    return Path(record.path.name) if rel == Path(".") else rel


def mask_candidates(record: Record, root: Path, masks_dir: str | Path) -> list[Path]:
    """Where the mask of ``record`` may be, in the order tried (see the module docstring)."""
    rel = _relative(record, root).with_suffix(".png")
    parts = rel.parts
    return [Path(masks_dir).joinpath(*parts[k:]) for k in range(len(parts))]


def mask_path(record: Record, index: LandmarkIndex, masks_dir: str | Path | None = None) -> Path:
    """The mask file of ``record``; :class:`InputError` naming the expected file when there is none."""
    if masks_dir is not None:
        cands = mask_candidates(record, index.root, masks_dir)
        for c in cands:
            if c.is_file():
                return c
        raise InputError(f"mask not found for image {record.path}", cands[0])
    own = record.meta.get("mask")
    if own is None:
        raise InputError(f"dataset kind {index.kind!r} has no masks of its own: give a mask folder "
                         "(--masks DIR or a masks=DIR spec option)", record.path)
    if not Path(own).is_file():
        raise InputError(f"mask not found for image {record.path}", own)
    return Path(own)


def binarise(im: Image.Image) -> np.ndarray:
    """``(H, W)`` bool foreground of a decoded mask image (rules in the module docstring)."""
    if im.mode in ("1", "P"):
        return np.asarray(im) > 0
    if im.mode.startswith("I;16"):
        return np.asarray(im).astype(np.int64) > 65535 // 2
    if im.mode == "I":
        a = np.asarray(im).astype(np.int64)
        hi = 65535 if a.max(initial=0) <= 65535 else 2**31 - 1
        return a > hi // 2
    if im.mode == "F":
        return np.asarray(im) > 0.5
    return np.asarray(im.convert("L")) > 127


def read_mask(path: str | Path, size_wh: tuple[int, int] | None = None, image: str | Path | None = None
              ) -> np.ndarray:
    """Decode a mask file to ``(H, W)`` bool; checks its size against the image's ``(W, H)`` when given."""
    path = Path(path)
    if not path.is_file():
        raise InputError("mask file not found", path)
    try:
        with Image.open(path) as im:
            im.load()
            fg = binarise(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, *DECOMPRESSION_BOMBS) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"cannot decode mask ({msg})", path) from None
    if size_wh is not None and (fg.shape[1], fg.shape[0]) != tuple(size_wh):
        of = f" {image}" if image is not None else ""
        raise InputError(f"mask is {fg.shape[1]}x{fg.shape[0]} but its image{of} is {size_wh[0]}x{size_wh[1]}",
                         path)
    return fg


def crop_mask(fg: np.ndarray, box, canvas: int) -> np.ndarray:
    """Crop ``box`` of a bool mask and resize to ``canvas²`` exactly as images are: ``(canvas, canvas)`` uint8 coverage.

    The mask goes through :func:`~equinv.data.preprocess.resample` itself (as a grey RGB image), so the
    box, zero padding and bilinear antialiasing are those of the image by construction.
    """
    g = np.where(fg, np.uint8(255), np.uint8(0))
    return resample(np.repeat(g[:, :, None], 3, axis=2), tuple(box), canvas)[:, :, 0].copy()


def load_masks(ds: LandmarkDataset, masks_dir: str | Path | None = None, *, final: bool = True,
               workers: int = 2) -> np.ndarray:
    """Coverage masks of every item of ``ds`` (its valid rows, in order): ``(N, S, S)`` uint8, 0..255.

    ``final``: the centre ``pre.size`` view (what the network sees, 96 px); else the whole canvas.
    Raises :class:`InputError` naming the file for a missing, unreadable or wrongly sized mask.
    """
    pre = ds.pre
    rows = [int(j) for j in ds.valid]

    def one(j: int) -> np.ndarray:
        r = ds.index.records[j]
        path = mask_path(r, ds.index, masks_dir)
        size = r.meta.get("size")
        cov = crop_mask(read_mask(path, tuple(size) if size else None, r.path), ds.boxes[j], pre.canvas)
        if final:
            m = pre.margin
            cov = cov[m : m + pre.size, m : m + pre.size]
        return cov

    side = pre.size if final else pre.canvas
    out = np.zeros((len(rows), side, side), np.uint8)
    with ThreadPoolExecutor(max(1, workers)) as pool:  # PIL decodes without the GIL
        for i, cov in enumerate(pool.map(one, rows)):
            out[i] = cov
    return out
