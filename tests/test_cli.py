"""The command line as a user meets it: one-line errors, counts, figures, the demo."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from equinv.cli import main


def test_data_check_counts_and_sheet(tmp_path, capsys):
    sheet = tmp_path / "sheet.png"
    assert main(["data", "check", "synthetic:12?size=64", "--out", str(sheet), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "images         12" in out and "visible points 120" in out and "64x64 (12)" in out
    assert Image.open(sheet).size[0] > 0


def test_unknown_kind_is_one_line_error(capsys):
    assert main(["data", "check", "nope:/x", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("equinv: error:") and "unknown dataset kind 'nope'" in err and "\n" not in err


def test_corrupt_image_names_file_and_skip_bad_lists_it(tmp_path, capsys):
    for i in range(3):
        Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(tmp_path / f"im{i}.png")
    (tmp_path / "im1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    assert main(["data", "check", f"folder:{tmp_path}", "--no-sheet", "--quiet"]) == 2
    assert "im1.png" in capsys.readouterr().err
    report = tmp_path / "skips.txt"
    code = main(["data", "check", f"folder:{tmp_path}", "--no-sheet", "--quiet", "--skip-bad",
                 "--skip-report", str(report)])
    out = capsys.readouterr().out
    assert code == 0 and "images         2" in out and "skipped        1" in out
    assert "im1.png" in report.read_text()


def test_bad_preprocessing_option(capsys):
    assert main(["data", "check", "synthetic:4?size=64", "--size", "4", "--quiet"]) == 2
    assert "bad preprocessing option" in capsys.readouterr().err


def test_demo_writes_figures_and_summary(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--n", "16", "--epochs", "1", "--labelled", "8", "--steps", "10"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 16 and summary["view_shape"] == [16, 3, 96, 96]
    assert summary["pretraining"]["steps"] == 1 and summary["labelled"] == 8
    iod = summary["held_out_iod_percent"]
    assert set(iod) == {"pretrained", "random_init", "mean_shape"} and all(0 < v < 100 for v in iod.values())
    for name in summary["figures"]:
        assert Image.open(out / name).size[0] > 100
    from equinv.landmarks.model import load_model

    assert load_model(out / "model").landmark_names[0] == "left_eye"
