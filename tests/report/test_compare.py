"""Several runs side by side (`equinv report A B ...`) and the command line."""

from __future__ import annotations

import pytest

from equinv.cli import main
from equinv.errors import InputError
from equinv.report.compare import compare_runs
from tests.report.fakes import assert_png, write_match, write_regression, write_segment


def _table_rows(md: str, heading: str = "## Results") -> list[str]:
    """Data rows of the first Markdown table after ``heading``."""
    lines = md[md.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def _runs(tmp_path):
    a = write_regression(tmp_path / "r18", n_train=(2, 4), iod=6.0, arch="resnet18")
    b = write_regression(tmp_path / "r50", n_train=(2, 4, 8), iod=5.0, backbone="runs/celeba_r50", arch="resnet50")
    c = write_segment(write_match(tmp_path / "m", same=2.5), n_train=(1, 5))
    return a, b, c


def test_side_by_side_table_and_curves(tmp_path):
    a, b, c = _runs(tmp_path)
    out = tmp_path / "cmp"
    paths = compare_runs([a, b, c], out)
    md = (out / "compare.md").read_text()
    assert paths[:2] == [out / "compare.md", out / "compare.html"]
    rows = _table_rows(md)
    assert len(rows) == 3 and rows[0].startswith("| r18 ") and rows[2].startswith("| m ")
    header = md[md.index("| run"):].splitlines()[0]
    for col in ("backbone", "arch", "descriptor", "IOD % N=2", "PCK % N=4", "IOD % N=8", "match same",
                "match diff", "IoU N=1", "IoU N=5"):
        assert col in header, col
    # r50 has 5 + 4/2 = 7.00 at N=2, the best (bold); r18 has 8.00; a column with one value has no bold
    assert "**7.00 ± 0.35**" in md and "| 8.00 ± 0.35 |" in md
    assert "| 2.50 |" in rows[2] and "0.457 ± 0.012" in rows[2] and "resnet50" in rows[1]
    # one combined IOD curve (the regression runs share N=2, 4) and the IoU curve of the one segment run
    figs = [p for p in paths if p.suffix == ".png"]
    assert [p.name for p in figs] == ["compare_curve_0.png", "compare_curve_1.png"]
    for p in figs:
        assert_png(p)
    html = (out / "compare.html").read_text()
    assert 'src="compare_curve_0.png"' in html and "<b>7.00 ± 0.35</b>" in html


def test_curves_carry_the_mean_shape_reference_of_the_first_run_that_has_it(tmp_path, monkeypatch):
    import equinv.report.figures as figures

    drawn = []
    real = figures.annotation_curve
    monkeypatch.setattr(figures, "annotation_curve", lambda path, series, *a, **k: (drawn.append(series),
                                                                                     real(path, series, *a, **k))[1])
    a = write_regression(tmp_path / "a", n_train=(2, 4), iod=6.0)
    b = write_regression(tmp_path / "b", n_train=(2, 4), iod=5.0, mean_shape=9.0)
    paths = compare_runs([a, b], tmp_path / "cmp")
    (series,) = drawn
    assert [s.label for s in series] == ["a", "b", "mean training shape (no features)"]
    ref = series[-1]
    assert ref.reference and ref.x == [2.0, 4.0] and ref.y == pytest.approx([9.5, 9.25])
    assert_png(next(p for p in paths if p.suffix == ".png"))
    # the single-run page has it as a column and in its own curve
    from equinv.report.page import write_run_page

    drawn.clear()
    write_run_page(b)
    assert "mean shape IOD error %" in (b / "report.md").read_text()
    assert any(s.reference for series in drawn for s in series)
    write_run_page(a)
    assert "mean shape" not in (a / "report.md").read_text()


def test_names_links_and_no_shared_sizes(tmp_path):
    a = write_regression(tmp_path / "a", n_train=(1, 3))
    b = write_regression(tmp_path / "b", n_train=(2, 4))
    assert main(["report", str(a)]) == 0  # a's own page, linked from the comparison
    out = tmp_path / "cmp"
    paths = compare_runs([a, b], out, names=["first", "second"])
    md = (out / "compare.md").read_text()
    rows = _table_rows(md)
    assert rows[0].startswith("| [first](../a/report.md)") and rows[1].startswith("| second ")
    assert 'href="../a/report.html"' in (out / "compare.html").read_text()
    assert not [p for p in paths if p.suffix == ".png"] and "No curve" in md
    with pytest.raises(InputError, match="--names"):
        compare_runs([a, b], out, names=["one"])


def test_bad_dir_is_named_before_writing(tmp_path, capsys):
    a = write_match(tmp_path / "ok")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        compare_runs([a, tmp_path / "empty"], tmp_path / "cmp")
    assert not (tmp_path / "cmp").exists()
    assert main(["report", str(a), str(tmp_path / "missing"), "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("equinv: error:") and "missing" in err and err.count("\n") == 1


def test_cli_single_run_page_and_comparison(tmp_path, capsys, monkeypatch):
    a = write_match(tmp_path / "a")
    b = write_match(tmp_path / "b", same=1.0)
    assert main(["report", str(a)]) == 0
    assert (a / "report.md").is_file() and (a / "report.html").is_file()
    assert "report.html" in capsys.readouterr().out
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "cmp"), "--names", "x,y"]) == 0
    assert len(_table_rows((tmp_path / "cmp" / "compare.md").read_text())) == 2
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(a), str(b)]) == 0  # default --out
    assert (tmp_path / "report_compare" / "compare.html").is_file()


def test_help_has_example(capsys):
    assert main(["report", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Example" in out and "--names" in out and "--out" in out
