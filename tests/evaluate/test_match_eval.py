import json

import pytest

from equinv.errors import InputError
from equinv.evaluate.match_eval import eval_match
from equinv.features.spec import FeatureSpec


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
    with pytest.raises(InputError, match="--projector"):
        eval_match("synthetic:4?size=64", FeatureSpec("projected"), pairs=1, progress=False)


def test_cli_eval_match_with_a_dve_network(tmp_path, capsys):
    from equinv.cli import main
    from equinv.models.dve import build_dve, save_dve

    save_dve(build_dve("smallnet", 8), tmp_path / "dve" / "descriptor.safetensors", "smallnet", input_size=70)
    rc = main(["eval", "match", "--data", "synthetic:8?size=64", "--backbone", str(tmp_path / "dve"), "--pairs", "3",
               "--out", str(tmp_path / "out"), "--quiet"])
    assert rc == 0
    saved = json.loads((tmp_path / "out" / "match.json").read_text())
    assert saved["config"]["descriptor"] == "dve" and saved["config"]["arch"] == "smallnet"
    assert saved["match_error_diff"] > 0
    assert "dve: same identity" in capsys.readouterr().out


def test_cli_eval_match_bad_spec_is_one_line(tmp_path, capsys):
    from equinv.cli import main

    rc = main(["eval", "match", "--data", "nosuchkind:/x", "--pairs", "1", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "nosuchkind" in err and "Traceback" not in err
