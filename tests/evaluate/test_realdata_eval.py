"""The evaluation commands on ../shared/data, and on a held-back-style test set given as KIND:PATH."""

import json

import numpy as np
import pytest
from PIL import Image

from equinv.cli import main

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def _aflw_like_test_set(shared, root, n=8):
    """A held-back-format AFLW test set: 150x150 face crops + an MTFL ``testing.txt`` (forward slashes, CRLF).

    Built from the first lfw faces of MTFL's training list, cropped around their landmarks.
    """
    (root / "AFLW").mkdir(parents=True)
    lines = []
    rows = (shared / "mtfl" / "training.txt").read_text().splitlines()
    for i, row in enumerate(rows[:n]):
        parts = row.split()
        img = Image.open(shared / "mtfl" / parts[0].replace("\\", "/")).convert("RGB")
        pts = np.asarray(parts[1:11], float)  # 1-based x1..x5, y1..y5
        cx, cy = pts[:5].mean(), pts[5:].mean()
        x0, y0 = int(round(cx - 75)), int(round(cy - 70))
        img.crop((x0, y0, x0 + 150, y0 + 150)).save(root / "AFLW" / f"{i:05d}.jpg", quality=95)
        xs, ys = pts[:5] - x0, pts[5:] - y0
        lines.append(f" AFLW/{i:05d}.jpg " + " ".join(f"{v:.2f}" for v in (*xs, *ys)) + " 1 2 2 3")
    (root / "testing.txt").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return f"mtfl:{root}?list=testing.txt"


def test_eval_regress_on_mtfl_with_a_held_back_style_test_set(shared_data, tmp_path, capsys):
    held = _aflw_like_test_set(shared_data, tmp_path / "aflw_test")
    train = f"mtfl:{shared_data}/mtfl?holdout=16&limit=32"
    val = f"mtfl:{shared_data}/mtfl?holdout=16&part=val"
    out = tmp_path / "eval"
    rc = main(["eval", "regress", "--train", train, "--val", val, "--test", held, "--test",
               f"facepoint:{shared_data}/mtfl?list=cnn_facepoint_lists/testImageList.txt&limit=16",
               "--epochs", "2", "--out", str(out), "--quiet"])
    assert rc == 0
    res = json.loads((out / "regression.json").read_text())
    assert res["datasets"]["n_train_images"] == 32 and res["datasets"]["n_val_images"] == 16
    assert res["datasets"]["n_test_images"] == [8, 16]
    tests = res["runs"][0]["tests"]
    assert all(0 < t["iod_error_percent"] < 200 for t in tests.values())
    assert res["selection"] == "best validation metric"
    assert (out / "report.html").is_file() and (out / "predictions.npz").is_file()
    assert "IOD" in capsys.readouterr().out


def test_eval_match_on_celeba(shared_data, tmp_path):
    out = tmp_path / "match"
    rc = main(["eval", "match", "--data", f"celeba:{shared_data}/celeba?ids=8961-9000", "--pairs", "4",
               "--out", str(out), "--quiet"])
    assert rc == 0
    res = json.loads((out / "match.json").read_text())
    assert 0 <= res["match_error_same"] < res["match_error_diff"]
