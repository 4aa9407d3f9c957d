"""One evaluation run → report.md / report.html with tables, figures and provenance."""

from __future__ import annotations

import json
import re

import pytest

from equinv.errors import InputError
from equinv.report.page import fmt, fmt_pm, load_run, short_spec, write_run_page
from tests.report.fakes import SPEC, assert_png, write_match, write_regression, write_segment


def _pngs(paths):
    return sorted(p.name for p in paths if p.suffix == ".png")


def test_formatting():
    assert fmt(None) == "–" and fmt(3) == "3" and fmt(float("nan")) == "nan" and fmt(1.23456) == "1.23"
    assert fmt_pm(6.987, 0.3512, 3) == "6.99 ± 0.35"
    assert fmt_pm(6.987, 0.0, 1) == "6.99"  # one draw: no spread to show
    assert fmt_pm(0.45678, 0.01234, 2, 3) == "0.457 ± 0.012"
    assert short_spec("celeba:../shared/data/celeba?split=mafl_test") == "celeba:celeba?split=mafl_test"


def test_regression_page(tmp_path):
    d = write_regression(tmp_path / "reg", n_train=(2, 4))
    paths = write_run_page(d)
    md, html = d / "report.md", d / "report.html"
    assert paths[:2] == [md, html]
    text = md.read_text()
    # IOD error of n_train 2 is 6.987 + 4/2 = 8.987, std 0.3512 over 3 repeats; PCK 81.234 - 4 = 77.234
    assert "8.99 ± 0.35" in text and "7.99 ± 0.35" in text and "77.23 ± 0.35" in text
    assert "left_eye" in text and "chin" in text and "IOD % N=2" in text and "PCK % N=4" in text
    assert "runs/celeba_r18" in text and "resnet18" in text and "hypercolumn" in text
    assert "torch 2.x" in text and "<details>" in text
    # figures: the predictions of the largest and smallest n_train, the IOD and PCK curves
    assert _pngs(paths) == ["report_curve_iod.png", "report_curve_pck.png", "report_landmarks_0_0.png",
                            "report_landmarks_0_1.png"]
    for p in paths[2:]:
        assert_png(p)
        assert p.parent == d
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert 'src="report_landmarks_0_1.png"' in page and 'src="report_curve_iod.png"' in page
    assert not re.search(r"(src|href)=\"(https?:|/)", page)  # self-contained: only relative figure files
    assert "8.99 ± 0.35" in page and "<details><summary>regression: config</summary>" in page


def test_single_n_train_has_no_curve_and_pck_only_without_eyes(tmp_path):
    d = write_regression(tmp_path / "reg", n_train=(5,), eyes=False)
    paths = write_run_page(d)
    assert _pngs(paths) == ["report_landmarks_0_0.png"]
    text = (d / "report.md").read_text()
    assert "IOD error %" not in text and "79.63 ± 0.35" in text  # 81.234 - 8/5


def test_a_record_without_saved_images_skips_image_figures(tmp_path):
    d = write_regression(tmp_path / "reg", images=False)
    paths = write_run_page(d)
    text = (d / "report.md").read_text()
    assert "saved no test images" in text and "image figures skipped" in text
    assert not [p for p in _pngs(paths) if p.startswith("report_landmarks")]
    assert "report_curve_iod.png" in _pngs(paths)


def test_the_page_draws_the_saved_images_without_reading_the_dataset(tmp_path):
    # the dataset of the record is gone: the page only needs what the evaluation saved
    d = write_regression(tmp_path / "reg", spec="folder:/nonexistent/birds")
    paths = write_run_page(d)
    assert {"report_landmarks_0_0.png", "report_landmarks_0_1.png"} <= set(_pngs(paths))
    assert "image figures skipped" not in (d / "report.md").read_text()


def test_missing_predictions_file(tmp_path):
    d = write_regression(tmp_path / "reg", npz=False)
    write_run_page(d)
    assert "predictions.npz not found" in (d / "report.md").read_text()


def test_match_and_segment_page(tmp_path):
    d = write_segment(write_match(tmp_path / "run"))
    paths = write_run_page(d)
    text = (d / "report.md").read_text()
    assert "3.46" in text and "5.68" in text and "Landmark matching" in text
    assert "0.457 ± 0.012" in text and "0.557 ± 0.012" in text and "mean IoU" in text
    assert _pngs(paths) == ["report_curve_iou.png", "report_masks_0_0.png", "report_masks_0_1.png"]
    for p in paths[2:]:
        assert_png(p)
    assert "match: config" in text and "segment: datasets" in text


def test_segment_spec_with_masks_option_still_shows_images(tmp_path):
    d = write_segment(tmp_path / "seg", spec=SPEC + "&masks=/elsewhere/masks", n_train=(10,))
    paths = write_run_page(d)
    assert "masks drawn on grey" not in (d / "report.md").read_text()
    assert _pngs(paths) == ["report_masks_0_0.png"]


def test_segment_without_images_draws_masks_on_grey(tmp_path):
    d = write_segment(tmp_path / "seg", spec="folder:/nonexistent/cub", n_train=(10,), images=False)
    paths = write_run_page(d)
    assert "masks drawn on grey" in (d / "report.md").read_text()
    assert _pngs(paths) == ["report_masks_0_0.png"]


def test_bad_dirs_name_the_dir(tmp_path):
    with pytest.raises(InputError, match="nope"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty.*no evaluation records"):
        write_run_page(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "match.json").write_text("{not json")
    with pytest.raises(InputError, match="match.json"):
        write_run_page(bad)


def test_real_regression_then_page(tmp_path):
    from equinv.evaluate.regression import RegressionConfig, run_regression
    from equinv.features.spec import FeatureSpec
    from equinv.models.hypercolumn import frozen_trunk

    test = "synthetic:4?size=64&seed=1"
    cfg = RegressionConfig(train="synthetic:12?size=64", test=[test], epochs=1, n_train=[2, 4], repeats=2,
                           device="cpu", features=FeatureSpec(grid=12), n_heatmaps=2, tile_to=8,
                           cache_dir=str(tmp_path / "cache"))
    res = run_regression(cfg, tmp_path / "out", trunk=frozen_trunk("resnet18", None, seed=0))
    paths = write_run_page(tmp_path / "out")
    text = (tmp_path / "out" / "report.md").read_text()
    t = res["runs"][0]["tests"][test]
    assert fmt_pm(t["iod_error_percent"], t["iod_error_percent_std"], 2) in text
    # the no-feature reference: a column and, in the curve, a dashed line
    assert "mean shape IOD error %" in text
    assert fmt_pm(t["mean_shape_iod_error_percent"], t["mean_shape_iod_error_percent_std"], 2) in text
    # the evaluation saved its test images, so the predictions are drawn on them
    assert "image figures skipped" not in text
    assert {"report_landmarks_0_0.png", "report_landmarks_0_1.png", "report_curve_iod.png"} <= set(_pngs(paths))
    for p in paths[2:]:
        assert_png(p)
    assert SPEC not in text


def test_eval_regress_command_writes_the_page(tmp_path, capsys):
    from equinv.cli import main

    out = tmp_path / "eval"
    assert main(["eval", "regress", "--train", "synthetic:8?size=64", "--test", "synthetic:4?size=64&seed=1",
                 "--epochs", "1", "--softargmax-mul", "3", "--out", str(out), "--quiet"]) == 0
    assert f"wrote {out / 'report.html'}" in capsys.readouterr().out
    assert json.loads((out / "regression.json").read_text())["config"]["softargmax_mul"] == 3.0
    assert (out / "report.md").is_file() and (out / "report_landmarks_0_0.png").is_file()
