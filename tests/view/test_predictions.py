"""Reading an ``equinv predict`` output for the predictions view."""

from __future__ import annotations

import json
import math

import pytest

from equinv.errors import InputError
from equinv.view import predictions
from tests.view.conftest import write_predictions


def test_build_sorts_worst_first_with_pixel_errors(tmp_path):
    path, doc = write_predictions(tmp_path, n=5)
    payload, files = predictions.build(path, limit=3, thumb=64)
    errs = []
    for im in doc["images"]:
        d = [math.dist(p, t) for p, t in zip(im["points"], im["true"], strict=True) if t is not None]
        errs.append(sum(d) / len(d))
    worst = sorted(range(5), key=lambda i: -errs[i])[:3]
    assert [it["index"] for it in payload["items"]] == worst
    assert payload["n_total"] == 5 and payload["error_unit"].startswith("px")
    for it in payload["items"]:
        assert it["error"] == pytest.approx(errs[it["index"]], abs=1e-3)
        assert it["w"] == it["h"] == 48 + 16 * it["index"]  # points stay in the input image's pixels
    lm = predictions.landmark_errors(predictions.read(path)["items"][1])
    one = doc["images"][1]
    assert lm[3] is None and lm[0] == pytest.approx(math.dist(one["points"][0], one["true"][0]), abs=1e-3)
    assert sum(payload["histogram"]["counts"]) == 5 and len(payload["histogram"]["edges"]) == 21
    assert set(files) == {it["file"] for it in payload["items"]}
    assert all(max(a.shape[:2]) <= 64 for a in files.values())


def test_errors_from_the_file_are_used_and_relative_paths_resolve_beside_it(tmp_path, monkeypatch):
    path, doc = write_predictions(tmp_path, n=3, errors=True)
    for im in doc["images"]:
        im["path"] = im["path"].rsplit("/", 1)[1]
    path.write_text(json.dumps(doc))
    monkeypatch.chdir("/")
    payload, _ = predictions.build(path)
    assert [it["error"] for it in payload["items"]] == sorted(doc["errors"], reverse=True)
    assert payload["error_unit"] == "as in the file's errors"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(images=[]), "no images"),
        (lambda d: d["images"][1].update(points=[[1, 2]]), "images[1].points must be 10"),
        (lambda d: d["images"][0]["points"][0].__setitem__(0, "x"), "images[0].points"),
        (lambda d: d["images"][2].update(path="missing.png"), "images[2]: image not found: missing.png"),
        (lambda d: d["images"][0].update(confidence=[0.5]), "images[0].confidence must hold 10"),
        (lambda d: d.update(errors=[1.0]), "errors must hold one number"),
        (lambda d: d.update(landmarks="eyes"), "landmarks must be"),
    ],
)
def test_bad_predictions_are_one_line_errors_naming_the_file(tmp_path, edit, message):
    path, doc = write_predictions(tmp_path, n=3)
    edit(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError) as e:
        predictions.read(path)
    assert str(path) in str(e.value) and message in str(e.value) and "\n" not in str(e.value)


def test_invalid_json_names_the_line(tmp_path):
    p = tmp_path / "p.json"
    p.write_text('{"images": [\n  {"path": 1,}\n]}')
    with pytest.raises(InputError, match=r"p\.json:2: not valid JSON"):
        predictions.read(p)
    with pytest.raises(InputError, match="no such predictions file"):
        predictions.read(tmp_path / "none.json")
