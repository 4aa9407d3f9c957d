"""Write a viewer page: ``OUT/index.html`` with its scripts and style (package files), ``data/*.js``, ``img/*``.

Data files are scripts that assign ``window.EQV_DATA[name] = <JSON>``: the page loads them with
``<script>`` tags, which browsers allow from ``file://`` (``fetch`` of local files is blocked), so the
folder opens by double-click, without a server or network.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import numpy as np
from PIL import Image

from equinv.version import __version__

STATIC = ("index.html", "view.css", "common.js", "correspondence.js", "parts.js", "predictions.js", "view.js")


def colormap(name: str = "inferno", n: int = 256) -> list[list[int]]:
    """``n`` RGB colours of a matplotlib colormap (the similarity overlay's colours)."""
    from matplotlib import colormaps

    rgba = colormaps[name](np.linspace(0.0, 1.0, n))
    return (rgba[:, :3] * 255).round().astype(int).tolist()


def palette(n: int) -> list[list[int]]:
    """Landmark / part colours ``0..n-1``, the palette of equinv's figures."""
    from equinv.viz.contact_sheet import landmark_colour

    return [list(landmark_colour(k)) for k in range(max(n, 1))]


def write_data(out: Path, name: str, payload) -> str:
    """``OUT/data/NAME.js`` defining ``EQV_DATA[NAME]``; returns its path relative to ``out``."""
    rel = f"data/{name}.js"
    text = json.dumps(payload, ensure_ascii=True, separators=(",", ":"))
    (out / "data").mkdir(parents=True, exist_ok=True)
    (out / rel).write_text(f"(window.EQV_DATA = window.EQV_DATA || {{}})[{json.dumps(name)}] = {text};\n")
    return rel


def read_data(out: str | Path, name: str):
    """The payload of ``OUT/data/NAME.js`` (tests, and users checking what a page holds)."""
    text = (Path(out) / "data" / f"{name}.js").read_text()
    return json.loads(text[text.index("] = ") + 4 : text.rstrip().rindex(";")])


def write_image(out: Path, rel: str, image: np.ndarray) -> None:
    """An ``(H, W, 3)`` uint8 image as ``OUT/rel`` (PNG, or JPEG for ``.jpg``)."""
    p = out / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    im.save(p, quality=90) if p.suffix == ".jpg" else im.save(p)


def write_page(out: str | Path, meta: dict, data: dict | None = None, images: dict | None = None) -> Path:
    """Write the page into ``out``: static files, ``data/meta.js`` (``meta`` plus version, colours) and every
    ``data`` payload and ``images`` file (``{relative path: (H, W, 3) uint8}``). Returns ``out/index.html``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    static = files("equinv.view") / "static"
    for name in STATIC:
        (out / name).write_bytes((static / name).read_bytes())
    for rel, image in (images or {}).items():
        write_image(out, rel, image)
    for name, payload in (data or {}).items():
        write_data(out, name, payload)
    # 256 colours cover 68-point faces and NMF-64 parts; the page wraps around beyond
    write_data(out, "meta", {"equinv": __version__, "colormap": colormap(), "palette": palette(256), **meta})
    return out / "index.html"
