"""``equinv view`` from the command line: the files it writes and its one-line errors."""

from __future__ import annotations

import re
import socket
import threading
import urllib.request

import numpy as np
import torch

from equinv.cli import main
from equinv.evaluate.transfer import transfer_landmarks
from equinv.view import serve
from equinv.view.correspondence import stored_descriptors
from equinv.view.page import read_data
from tests.view.conftest import GRID, REF, write_models


def test_page_files_and_what_it_states(page):
    for f in ("index.html", "view.js", "common.js", "view.css", "data/meta.js", "data/desc_hypercolumn.js",
              "data/desc_projected.js", "data/desc_nmf.js", "data/desc_dve.js",
              "data/parts.js", "data/predictions.js", "img/0000.png", "img/0006.png", "img/pred_0000.jpg"):
        assert (page / f).is_file(), f
    html = "".join(f.read_text() for f in page.iterdir() if f.suffix in (".html", ".js", ".css"))
    assert html.count("<script src=") == 6  # meta + 5 page scripts, all local files
    assert set(re.findall(r"https?://[^\s\"'`]+", html)) == {"http://www.w3.org/2000/svg"}  # a namespace; no CDN
    meta = read_data(page, "meta")
    c = meta["correspondence"]
    assert meta["backbone"] == "random" and c["grid"] == GRID and c["image_size"] == 96
    assert c["reference"] == {"spec": REF.split("#")[0], "index": 2, "path": c["images"][0]["path"]}
    assert c["targets"]["shown"] == 6 and len(c["images"]) == 7 and c["labelled"]
    hc, proj, nmf, dve = c["sources"]
    assert (hc["name"], hc["in_dim"], hc["dim"]) == ("hypercolumn", 960, 64) and 0 < hc["pca_energy"] <= 1
    assert [(s["name"], s["in_dim"], s["dim"], s["pca_energy"]) for s in (proj, nmf, dve)] == [
        ("projected", 8, 8, 1.0), ("nmf", 6, 6, 1.0), ("dve", 16, 16, 1.0)]
    assert hc["shape"] == [7, GRID, GRID, 64] and dve["shape"] == [7, GRID, GRID, 16]
    assert "projector" in proj["what"] and "NMF" in nmf["what"] and "DVE" in dve["what"]
    assert c["parts"]["dim"] == 6
    parts = read_data(page, "parts")
    assert len(parts["labels"]) == len(parts["strength"])


def test_stored_reference_descriptor_matches_itself(page):
    # target 2 is the reference image itself: every reference cell's best match is that cell
    desc = stored_descriptors(page, "hypercolumn")
    assert desc.shape == (7, 64, GRID, GRID)
    # described in batches of 1 and 6, so equal up to float rounding (a quantisation step or two)
    assert (desc[0] - desc[3]).abs().max() <= 2 / 2048
    ys, xs = torch.meshgrid(torch.arange(GRID), torch.arange(GRID), indexing="ij")
    pts = (torch.stack([xs, ys], -1).reshape(-1, 2).float() + 0.5) * 96 / GRID - 0.5
    pred = transfer_landmarks(desc[0], pts, desc[3:4], image_size=96)[0]
    same = (pred == pts).all(-1).float().mean()
    assert same > 0.9  # flat background cells have near-twins


def _fails(capsys, argv, *expect):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("equinv: error: ") and "\n" not in err and "Traceback" not in err
    for e in expect:
        assert e in err, err
    return err


def test_bad_input_is_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    notarun = tmp_path / "notarun"
    notarun.mkdir()
    out = str(tmp_path / "o")
    _fails(capsys, ["view", "--reference", f"folder:{empty}#0", "--out", out], str(empty))
    _fails(capsys, ["view", "--reference", "synthetic:4?size=64#7", "--out", out, "--quiet"],
           "reference index 7 out of range", "has 4 images")
    _fails(capsys, ["view", "--backbone", str(notarun), "--reference", "synthetic:4?size=64#0", "--out", out],
           str(notarun), "not a run")
    _fails(capsys, ["view", "--backbone", str(tmp_path / "nope"), "--reference", "synthetic:4#0", "--out", out],
           "no such run")
    _fails(capsys, ["view", "--out", out], "--reference", "--predictions")
    _fails(capsys, ["view", "--reference", "synthetic:4#0", "--source", "projected", "--out", out], "--projector")
    _fails(capsys, ["view", "--reference", "synthetic:4#0", "--source", "dve", "--out", out], "DVE run")
    _fails(capsys, ["view", "--reference", "synthetic:4#0", "--source", "sift", "--out", out],
           "--source", "unknown source sift")
    dve, proj, parts = write_models(tmp_path)
    _fails(capsys, ["view", "--reference", "synthetic:4?size=64#0", "--source", "projected", "--projector", str(proj),
                    "--layers", "3", "--out", out, "--quiet"], "reads channels (512, 256, 128, 64)", "--arch/--layers")
    _fails(capsys, ["view", "--reference", "synthetic:4?size=64#0", "--parts", str(parts), "--layers", "3",
                    "--out", out, "--quiet"], "reads 960-d hypercolumns")
    _fails(capsys, ["view", "--backbone", str(dve), "--reference", "synthetic:4#0", "--parts", str(parts),
                    "--out", out], "not a DVE run")
    assert not (tmp_path / "o").exists()


def test_serve_refuses_a_port_in_use_before_any_work(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        err = _fails(capsys, ["view", "--reference", "synthetic:4?size=64#0", "--out", str(tmp_path / "o"),
                              "--serve", str(port)], f"port {port} on 127.0.0.1 is already in use")
    assert "--serve" in err and not (tmp_path / "o").exists()


def test_serve_binds_loopback_and_serves_the_page(page):
    server = serve.bind(page, 0)
    host, port = server.server_address
    assert host == "127.0.0.1" and port > 0
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        with urllib.request.urlopen(serve.url(server), timeout=10) as r:
            assert r.status == 200 and b"view.js" in r.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/meta.js", timeout=10) as r:
            assert r.read().startswith(b"(window.EQV_DATA")
    finally:
        server.shutdown()
        server.server_close()


def test_images_are_the_evaluated_views(page):
    from PIL import Image

    meta = read_data(page, "meta")["correspondence"]
    im = np.asarray(Image.open(page / meta["images"][0]["file"]))
    assert im.shape == (96, 96, 3)
    lm = np.asarray(meta["images"][0]["landmarks"])
    assert lm.shape == (10, 2) and (lm > -10).all() and (lm < 106).all()
