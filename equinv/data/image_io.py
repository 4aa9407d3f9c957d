"""Image decoding to uint8 RGB, whatever the file's mode, with errors that name the file."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from equinv.errors import InputError

#: PIL's refusals of a header that declares more pixels than its limit (the error, and the warning below 2x).
DECOMPRESSION_BOMBS = (Image.DecompressionBombError, Image.DecompressionBombWarning)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Convert any PIL mode to ``(H, W, 3)`` uint8 RGB.

    16-bit and 32-bit grey images are rescaled from their type's range (a plain PIL ``convert`` would
    clip them to 255); alpha is dropped; palette, CMYK, YCbCr, LAB, 1-bit and grey go through PIL.
    """
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im)
        if im.mode.startswith("I;16"):
            a = a.astype(np.float32) / 65535.0
        elif im.mode == "I":
            hi = 65535.0 if a.max(initial=0) <= 65535 else float(2**31 - 1)
            a = np.clip(a.astype(np.float32) / hi, 0, 1)
        else:  # "F": assume [0, 1] floats, as most tools write
            a = np.clip(a.astype(np.float32), 0, 1)
        g = np.round(a * 255.0).astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8).copy()


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to ``(H, W, 3)`` uint8 RGB.

    Raises:
        InputError: the file is missing, not an image, corrupt or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("image file not found", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                return _to_rgb(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, *DECOMPRESSION_BOMBS) as e:
        raise InputError(f"cannot decode image ({_first_line(e)})", path) from None


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` from the file header, without decoding the pixels.

    Raises:
        InputError: the file is missing or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("image file not found", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # as load_rgb: refused here already
            with Image.open(path) as im:
                return int(im.size[0]), int(im.size[1])
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, *DECOMPRESSION_BOMBS) as e:
        raise InputError(f"not a readable image ({_first_line(e)})", path) from None
