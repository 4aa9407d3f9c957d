"""The page in headless Chromium (the system binary, driven by Playwright): matches, parts, predictions, keys.

Skipped, with the reason, where Playwright or a Chromium binary is missing (`.ci/run` installs Debian's
``chromium``); never passed without a browser.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from equinv.evaluate.transfer import reference_vectors
from equinv.view import browser, serve
from equinv.view.page import read_data
from tests.view.browser_checks import page_cells, python_cells, use_source
from tests.view.conftest import GRID

WHY = browser.unavailable()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"no browser to drive: {WHY}")


@pytest.fixture(scope="module")
def headless():
    with browser.launch() as b:
        yield b


@pytest.fixture(scope="module")
def chromium(page, headless):
    with browser.open_page(page / "index.html", browser=headless) as (pg, problems):
        yield pg, problems


@pytest.fixture
def ui(chromium):
    """The open page on the correspondence tab; fails the test on any console error or network request."""
    pg, problems = chromium
    pg.click("#tab-correspondence")
    yield pg
    assert problems == []


@pytest.mark.parametrize("source", ["hypercolumn", "projected", "nmf", "dve"])
def test_clicked_reference_landmark_moves_markers_to_the_python_match(page, ui, source):
    use_source(ui, source)
    ref = read_data(page, "meta")["correspondence"]["images"][0]
    visible = [k for k, v in enumerate(ref["visible"]) if v]
    assert len(visible) >= 5
    for k in visible:
        # landmarks inside the view are buttons on the image; every one has a chip below it
        on_image = ui.locator(f'#ref button.lm[data-k="{k}"]')
        (on_image if on_image.is_visible() else ui.locator(f'#ref-landmarks button[data-k="{k}"]')).click()
        ui.wait_for_function("k => EQV_VIEW.state().query && EQV_VIEW.state().query.k === k", arg=k)
        assert page_cells(ui, GRID) == python_cells(page, source, ref["landmarks"][k]), f"landmark {k}"
        assert f"landmark {k + 1}" in ui.text_content("#status")


def test_clicked_free_point_matches_python(page, ui):
    use_source(ui, "hypercolumn")
    for fx, fy in [(0.31, 0.62), (0.5, 0.5), (0.83, 0.17)]:
        box = ui.locator("#ref").bounding_box()
        ui.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        # a pointer query is drawn on the next animation frame: wait two frames before reading the markers
        ui.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        q = ui.evaluate("EQV_VIEW.state().query")
        assert q["pinned"] and abs(q["x"] - (fx * 96 - 0.5)) < 0.5 and abs(q["y"] - (fy * 96 - 0.5)) < 0.5
        assert page_cells(ui, GRID) == python_cells(page, "hypercolumn", [q["x"], q["y"]])


def test_reference_cell_rounding_is_torchs(ui):
    g = np.random.default_rng(0)
    pts = np.concatenate([g.uniform(-3, 99, 300), np.arange(-1.5, 97, 0.5), np.round(g.uniform(0, 95, 200), 3)])
    for grid in (24, 40, 48, 96):
        js = ui.evaluate("([ps, grid]) => ps.map(p => EQV_VIEW.cellOf(p, 96, grid))", [pts.tolist(), grid])
        # reference_vectors reads the cell transfer_landmarks uses: recover its index from a one-hot grid
        idx = torch.arange(grid, dtype=torch.float32).view(1, 1, grid).expand(1, grid, grid)
        xy = torch.tensor(np.stack([pts, pts], -1), dtype=torch.float32)
        want = reference_vectors(idx, xy, image_size=96)[:, 0].long().tolist()
        assert js == want, grid


def test_keyboard_picks_landmarks_moves_point_toggles_truth_and_source(ui):
    use_source(ui, "hypercolumn")
    ui.locator("body").press("2")
    ui.wait_for_function("EQV_VIEW.state().query && EQV_VIEW.state().query.k === 1")
    before = ui.evaluate("EQV_VIEW.state().result")
    ui.locator("body").press("ArrowRight")
    after = ui.evaluate("EQV_VIEW.state().result")
    assert (after["gx"], after["gy"]) == (min(before["gx"] + 1, GRID - 1), before["gy"])
    if ui.is_checked("#truth"):
        ui.locator("body").press("t")
    assert ui.locator("#targets .ring").count() == 0
    ui.locator("body").press("t")
    assert ui.locator("#targets .ring").count() > 0
    ui.locator("body").press("s")
    ui.wait_for_function("document.getElementById('source').value === 'projected'")


def test_parts_view_draws_python_part_labels(page, chromium):
    pg, problems = chromium
    pg.click("#tab-parts")
    parts, meta = read_data(page, "parts"), read_data(page, "meta")["correspondence"]["parts"]
    import base64

    labels = np.frombuffer(base64.b64decode(parts["labels"]), np.uint8).reshape(-1, meta["grid"], meta["grid"])
    strength = np.frombuffer(base64.b64decode(parts["strength"]), np.uint8).reshape(labels.shape)
    part = int(np.bincount(labels.ravel()).argmax())
    pg.select_option("#part-select", str(part))
    pg.fill("#parts-opacity", "1")
    pg.dispatch_event("#parts-opacity", "input")
    drawn = pg.eval_on_selector_all("#parts-grid canvas", """cs => cs.map(c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n; })""")
    assert drawn == [int(((lab == part) & (s > 0)).sum()) for lab, s in zip(labels, strength, strict=True)]
    assert sum(drawn) > 0
    pg.locator("body").press("]")
    assert pg.input_value("#part-select") == str((part + 1) % meta["dim"])
    assert problems == []


def test_predictions_view_worst_first_with_points(page, chromium):
    pg, problems = chromium
    pg.click("#tab-predictions")
    data = read_data(page, "predictions")
    items = pg.eval_on_selector_all("#pred-list li", "ls => ls.map(l => l.textContent)")
    assert [t.split(". ")[0] for t in items] == [str(i + 1) for i in range(len(data["items"]))]
    errs = [it["error"] for it in data["items"]]
    assert errs == sorted(errs, reverse=True)
    pg.locator("body").press("j")
    assert pg.get_attribute('#pred-list li[data-rank="1"]', "aria-selected") == "true"
    it = data["items"][1]
    box = pg.locator("#pred-image img").bounding_box()
    for k, (x, y) in enumerate(it["points"]):
        r = pg.locator(f'#pred-image .dot[data-k="{k}"]').bounding_box()
        cx, cy = r["x"] + r["width"] / 2, r["y"] + r["height"] / 2
        assert abs((cx - box["x"]) / box["width"] * it["w"] - 0.5 - x) < 0.6
        assert abs((cy - box["y"]) / box["height"] * it["h"] - 0.5 - y) < 0.6
    assert pg.locator("#pred-image .ring").count() == sum(t is not None for t in it["true"])
    assert pg.locator("#hist rect").count() == len(data["histogram"]["counts"])
    assert pg.locator("#pred-table tbody tr").count() == len(data["landmarks"])
    assert problems == []


def test_screenshot_without_console_errors(page, headless, tmp_path):
    png = browser.screenshot(page / "index.html", tmp_path / "view.png", landmark=0, browser=headless)
    from PIL import Image

    with Image.open(png) as im:
        assert im.size == (1280, 820)
    print(f"screenshot: {png}")


def test_served_page_loads_over_loopback(page, headless):
    server = serve.bind(page, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with browser.open_page(serve.url(server), browser=headless) as (pg, problems):
            pg.locator('#ref button.lm[data-k="0"]').click()
            assert pg.locator("#targets .marker:not([hidden])").count() == 6
            assert problems == []
    finally:
        server.shutdown()
        server.server_close()


def test_tied_cells_resolve_to_the_first_like_python(tmp_path, headless):
    # hand-made stored descriptors where every target holds the query vector in several cells
    from equinv.view import codec
    from equinv.view.page import write_page

    s, d, n = 4, 3, 3
    q = torch.zeros(1 + n, s, s, d, dtype=torch.int16)
    q[..., 2] = 100  # every other cell: a weaker, equal score
    q[0, 1, 2] = torch.tensor([2048, 0, 0])
    for t, cells in enumerate([[(0, 3), (3, 0)], [(2, 2), (2, 3)], [(3, 1), (3, 3), (0, 0)]], start=1):
        for y, x in cells:
            q[t, y, x] = torch.tensor([2048, 0, 0])
    point = [(2 + 0.5) * 96 / s - 0.5, (1 + 0.5) * 96 / s - 0.5]
    images = [{"file": f"img/{i}.png", "path": f"x{i}", "index": i, "landmarks": [point] if i == 0 else None,
               "visible": [True] if i == 0 else None} for i in range(1 + n)]
    source = {"name": "hypercolumn", "what": "hand-made", "in_dim": d, "dim": d, "pca_energy": 1.0,
              "shape": list(q.shape), "scale": codec.SCALE, "file": "data/desc_hypercolumn.js", "agreement": [0, 0]}
    meta = {"backbone": "none", "correspondence": {
        "image_size": 96, "grid": s, "names": ["p"], "labelled": False, "images": images, "sources": [source],
        "reference": {"spec": "x", "index": 0, "path": "x0"}, "targets": {"spec": "x", "total": n, "shown": n},
        "parts": None}}
    write_page(tmp_path, meta, {"desc_hypercolumn": codec.encode(q)},
               {im["file"]: np.full((96, 96, 3), 40 * i, np.uint8) for i, im in enumerate(images)})
    want = python_cells(tmp_path, "hypercolumn", point)
    assert want == [(3, 0), (2, 2), (0, 0)]  # (x, y) of the first tied cell in row-major order
    with browser.open_page(tmp_path / "index.html", browser=headless) as (pg, problems):
        pg.locator('#ref button.lm[data-k="0"]').click()
        assert page_cells(pg, s) == want
        assert problems == []
