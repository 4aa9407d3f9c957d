"""``equinv view`` on real faces with the archived DVE run beside a random ResNet: size and exact matches."""

from __future__ import annotations

import pytest

from equinv.cli import main
from equinv.view import browser
from equinv.view.page import read_data
from tests.conftest import REPO
from tests.view.browser_checks import page_cells, python_cells, use_source

DVE = REPO / "experiments" / "archive" / "cpu" / "faces" / "dve"
pytestmark = [pytest.mark.slow, pytest.mark.realdata]


@pytest.fixture(scope="module")
def celeba_page(shared_data, tmp_path_factory):
    if not (DVE / "descriptor.safetensors").is_file():
        pytest.skip(f"no archived DVE run at {DVE}")
    out = tmp_path_factory.mktemp("celeba_view")
    spec = f"celeba:{shared_data}/celeba?split=mafl_test"
    rc = main(["view", "--backbone", "random", "--dve", str(DVE), "--reference", f"{spec}#3", "--targets", spec,
               "--limit", "24", "--grid", "48", "--out", str(out), "--device", "cpu", "--quiet"])
    assert rc == 0
    return out


def test_page_size_and_statement(celeba_page):
    c = read_data(celeba_page, "meta")["correspondence"]
    assert c["targets"]["shown"] == 24 and c["labelled"] and c["grid"] == 48
    hc, dve = c["sources"]
    assert (hc["in_dim"], hc["dim"], dve["in_dim"], dve["dim"]) == (960, 64, 64, 64)
    for s in (hc, dve):  # 25 images x 48^2 x 64 int16, base64: 9.8 MB per source
        assert (celeba_page / s["file"]).stat().st_size < 10 * 2**20
        assert s["agreement"][1] == 24 * 5
    total = sum(f.stat().st_size for f in celeba_page.rglob("*") if f.is_file())
    assert total < 21 * 2**20


@pytest.mark.skipif(browser.unavailable() is not None, reason=f"no browser to drive: {browser.unavailable()}")
@pytest.mark.parametrize("source", ["dve", "hypercolumn"])
def test_every_landmark_match_is_the_python_match(celeba_page, source):
    ref = read_data(celeba_page, "meta")["correspondence"]["images"][0]
    with browser.open_page(celeba_page / "index.html") as (pg, problems):
        use_source(pg, source)
        for k, p in enumerate(ref["landmarks"]):
            pg.locator(f'#ref-landmarks button[data-k="{k}"]').click()
            pg.wait_for_function("k => EQV_VIEW.state().query.k === k", arg=k)
            assert page_cells(pg, 48) == python_cells(celeba_page, source, p), f"landmark {k}"
        assert problems == []
