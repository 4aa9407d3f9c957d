import json

import pytest

from equinv.evaluate.match_eval import eval_match


def test_eval_match_writes_record(tmp_path):
    r = eval_match("synthetic:16?size=64", pairs=4, progress=False, out=tmp_path)
    saved = json.loads((tmp_path / "match.json").read_text())
    for key in ("match_error_same", "match_error_diff", "match_error_same_px", "config", "versions", "seed"):
        assert key in saved
    assert saved["match_error_same"] == pytest.approx(r["match_error_same"])
    # same identity (a warp of the same image) is easier than a different identity
    assert r["match_error_same"] < r["match_error_diff"]
    assert saved["config"]["descriptor"] == "hypercolumn" and saved["versions"]["torch"]


def test_eval_match_needs_its_model():
    with pytest.raises(ValueError, match="--projector"):
        eval_match("synthetic:4?size=64", pairs=1, progress=False, descriptor="projected")
