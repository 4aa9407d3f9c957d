"""Every reader on tiny inputs written into tmp_path: good files read, bad rows become one-line
InputErrors naming file:line, and with ``SkipLog(skip_bad=True)`` the bad row is counted and the rest load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from equinv.data.readers import READERS
from equinv.data.readers.coco import keypoint_flip_permutation
from equinv.data.readers.w300 import FLIP_PERM
from equinv.data.spec import parse_spec, read_index
from equinv.errors import InputError, SkipLog


def png(path: Path, w: int = 40, h: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (90, 60, 30)).save(path)
    return path


def write(path: Path, text: str, newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", newline).encode())
    return path


def bad(spec: str, *parts: str, validate: bool = True) -> InputError:
    """read_index(spec) must raise an InputError whose one-line message contains every part."""
    with pytest.raises(InputError) as ei:
        read_index(spec, validate=validate)
    msg = str(ei.value)
    assert "\n" not in msg
    for p in parts:
        assert p in msg, f"{p!r} not in {msg!r}"
    return ei.value


def skipped(spec: str, n_good: int, n_bad: int, *parts: str):
    log = SkipLog(skip_bad=True)
    index = read_index(spec, log)
    assert len(index) == n_good
    assert len(log) == n_bad, [str(s) for s in log.skips]
    text = " | ".join(str(s) for s in log.skips)
    for p in parts:
        assert p in text, f"{p!r} not in {text!r}"
    return index, log


# ----------------------------------------------------------------------------- specs


def test_unknown_kind_lists_kinds():
    with pytest.raises(InputError, match="unknown dataset kind 'nope'") as ei:
        parse_spec("nope:/x")
    for k in ("mtfl", "facepoint", "celeba", "300w", "cub", "coco", "folder"):
        assert k in str(ei.value)
    assert set(READERS) >= {"mtfl", "facepoint", "celeba", "300w", "cub", "coco", "folder"}


def test_unknown_and_bad_options(tmp_path):
    png(tmp_path / "a.png")
    with pytest.raises(InputError, match=r"unknown option\(s\) \['colour'\] for kind 'folder'"):
        read_index(f"folder:{tmp_path}?colour=red")
    write(tmp_path / "training.txt", " a.png 1 2 3 4 5 1 2 3 4 5\n")
    with pytest.raises(InputError, match="one_based='2' must be one of 0, 1"):
        read_index(f"mtfl:{tmp_path}?one_based=2")
    with pytest.raises(InputError, match="dataset path does not exist"):
        read_index(f"mtfl:{tmp_path / 'nowhere'}")


# ----------------------------------------------------------------------------- mtfl / facepoint

MTFL_ROWS = [
    r" imgs\a.png 11 21 16 12 20 11 11 16 21 21 1 2 2 3",
    r" imgs\b.png 12 22 17 13 21 12 12 17 22 22 2 1 1 1",
    r" imgs\c.png 13 23 18 14 22 13 13 18 23 23 1 1 2 5",
]


def mtfl_dir(tmp_path: Path, rows: list[str], name: str = "training.txt") -> Path:
    for s in "abc":
        png(tmp_path / "imgs" / f"{s}.png")
    write(tmp_path / name, "\n".join(rows) + "\n", newline="\r\n")
    return tmp_path


def test_mtfl_good(tmp_path):
    d = mtfl_dir(tmp_path, MTFL_ROWS)
    ix = read_index(f"mtfl:{d}")
    assert len(ix) == 3 and ix.eyes == (0, 1) and ix.flip_perm == (1, 0, 2, 4, 3)
    r = ix.records[0]
    assert r.path == d / "imgs" / "a.png" and r.crop == "landmarks" and r.box is None
    np.testing.assert_allclose(r.landmarks, np.array([[11, 11], [21, 11], [16, 16], [12, 21], [20, 21]]) - 1)
    assert (
        r.meta["gender"] == 1 and r.meta["smile"] == 2 and r.meta["pose"] == 3 and r.meta["size"] == (40, 40)
    )
    assert r.where.endswith("training.txt:1")
    # the list file itself as PATH, and one_based=0
    ix0 = read_index(f"mtfl:{d / 'training.txt'}?one_based=0")
    np.testing.assert_allclose(ix0.records[0].landmarks[0], [11, 11])


def test_mtfl_scale_file_scales_the_one_based_offset(tmp_path):
    d = mtfl_dir(tmp_path, MTFL_ROWS)
    write(d / "imgs_scale.txt", "imgs/a.png 0.500000\nimgs/b.png\n")
    bad(f"mtfl:{d}", "imgs_scale.txt:2: ", "expected 2 columns")
    ix, _ = skipped(f"mtfl:{d}", 3, 1, "imgs_scale.txt:2")
    np.testing.assert_allclose(ix.records[0].landmarks[0], [10.5, 10.5])  # 1 px of the original = 0.5 px here
    np.testing.assert_allclose(ix.records[1].landmarks[0], [11, 11])


def test_mtfl_without_attributes_and_aflw_crop(tmp_path):
    png(tmp_path / "AFLW" / "x.jpg", 150, 150)
    write(tmp_path / "testing.txt", "AFLW/x.jpg 50 90 70 55 85 60 60 80 100 100\n")
    ix = read_index(f"mtfl:{tmp_path}?list=testing.txt")
    assert ix.records[0].crop == "whole" and ix.records[0].meta == {"size": (150, 150)}


def test_mtfl_uses_facepoint_boxes(tmp_path):
    d = mtfl_dir(tmp_path, MTFL_ROWS)
    write(
        d / "cnn_facepoint_lists" / "trainImageList.txt",
        r"imgs\b.png 5 30 6 31 11 11 21 11 16 16 12 21 20 21" + "\n",
    )
    ix = read_index(f"mtfl:{d}")
    assert [r.crop for r in ix.records] == ["landmarks", "box", "landmarks"]
    assert ix.records[1].box == (5.0, 6.0, 30.0, 31.0)  # left right top bottom -> (x0, y0, x1, y1)


@pytest.mark.parametrize(
    "row, parts",
    [
        (r" imgs\b.png 12 22 17 13 21 12 12 17 22 22 2 1", ["expected 15 columns", "got 13"]),
        (r" imgs\b.png 12 22 17 1x3 21 12 12 17 22 22 2 1 1 1", ["non-numeric coordinate '1x3'"]),
        (r" imgs\b.png 12 22 17 nan 21 12 12 17 22 22 2 1 1 1", ["coordinate 'nan' is not finite"]),
        (
            r" imgs\b.png 12 22 17 13 21 12 12 17 22 22 3 1 1 1",
            ["attribute gender must be one of 1, 2, got 3"],
        ),
        (r" imgs\b.png 12 22 17 13 21 12 12 17 22 22 2 1 1 7", ["attribute pose"]),
        (
            r" imgs\a.png 12 22 17 13 21 12 12 17 22 22 2 1 1 1",
            ["duplicate entry for imgs/a.png (first at line 1)"],
        ),
    ],
)
def test_mtfl_bad_row(tmp_path, row, parts):
    d = mtfl_dir(tmp_path, [MTFL_ROWS[0], row, MTFL_ROWS[2]])
    bad(f"mtfl:{d}", "training.txt:2: ", *parts)
    skipped(f"mtfl:{d}", 2, 1, "training.txt:2")


def test_mtfl_missing_list(tmp_path):
    bad(f"mtfl:{tmp_path}", "training.txt", "MTFL list file not found")
    bad(f"mtfl:{tmp_path}?list=testing.txt", "testing.txt", "not found")


def test_mtfl_far_outside_and_missing_image(tmp_path):
    rows = list(MTFL_ROWS)
    rows[1] = r" imgs\b.png 12 22 17 13 921 12 12 17 22 22 2 1 1 1"
    rows[2] = r" imgs\zz.png 13 23 18 14 22 13 13 18 23 23 1 1 2 5"
    d = mtfl_dir(tmp_path, rows)
    bad(f"mtfl:{d}", "training.txt:2: ", "landmark 4 (right_mouth)", "far outside the 40x40 image")
    ix, log = skipped(f"mtfl:{d}", 1, 2, "training.txt:2", "zz.png: image file not found")
    assert ix.records[0].path.name == "a.png"
    # without validation the missing image is not the reader's business
    assert len(read_index(f"mtfl:{d}", SkipLog(skip_bad=True), validate=False)) == 3


FP_ROWS = [
    "lfw/a.png 5 30 6 31 11 11 21 11 16 16 12 21 20 21",
    r"lfw\b.png 4 32 5 33 12 12 22 12 17 17 13 22 21 22",
]


def facepoint_dir(tmp_path: Path, rows: list[str], name: str = "trainImageList.txt") -> Path:
    png(tmp_path / "lfw" / "a.png")
    png(tmp_path / "lfw" / "b.png")
    write(tmp_path / "cnn_facepoint_lists" / name, "\n".join(rows) + "\n")
    return tmp_path


def test_facepoint_good(tmp_path):
    d = facepoint_dir(tmp_path, FP_ROWS)
    ix = read_index(f"facepoint:{d}")
    r = ix.records[1]
    assert r.path == d / "lfw" / "b.png" and r.crop == "box" and r.box == (4.0, 5.0, 32.0, 33.0)
    np.testing.assert_allclose(r.landmarks[:2], [[12, 12], [22, 12]])  # interleaved x, y
    # PATH = the list file: images are found relative to the MTFL root (its parent's parent)
    ix2 = read_index(f"facepoint:{d / 'cnn_facepoint_lists' / 'trainImageList.txt'}?one_based=1")
    assert ix2.records[0].path == d / "lfw" / "a.png"
    np.testing.assert_allclose(ix2.records[0].landmarks[0], [10, 10])


@pytest.mark.parametrize(
    "row, parts",
    [
        ("lfw/b.png 4 32 5 33 12 12 22 12 17 17 13 22 21", ["expected 15 columns", "got 14"]),
        ("lfw/b.png 4 32 5 33 12 12 22 12 17 17 13 22 21 y", ["non-numeric coordinate 'y'"]),
        ("lfw/b.png 4 32 5 33 12 12 22 12 17 17 13 22 21 inf", ["is not finite"]),
        ("lfw/b.png 32 4 5 33 12 12 22 12 17 17 13 22 21 22", ["left < right"]),
    ],
)
def test_facepoint_bad_row(tmp_path, row, parts):
    d = facepoint_dir(tmp_path, [FP_ROWS[0], row])
    bad(f"facepoint:{d}", "trainImageList.txt:2: ", *parts)
    skipped(f"facepoint:{d}", 1, 1, "trainImageList.txt:2")


def test_facepoint_missing_list(tmp_path):
    bad(f"facepoint:{tmp_path}?list=cnn_facepoint_lists/testImageList.txt", "testImageList.txt", "not found")


# ----------------------------------------------------------------------------- celeba

CELEBA_HEADER = " ".join(
    f"{p}_{c}" for p in ("lefteye", "righteye", "nose", "leftmouth", "rightmouth") for c in "xy"
)


def celeba_dir(tmp_path: Path, rows: list[str], count: int | None = None, size=(89, 109)) -> Path:
    for i in range(1, 5):
        png(tmp_path / "img_align_celeba_half" / f"{i:06d}.jpg", *size)
    n = len(rows) if count is None else count
    write(tmp_path / "list_landmarks_align_celeba.txt", "\n".join([str(n), CELEBA_HEADER, *rows]) + "\n")
    write(tmp_path / "mafl_training.txt", "000001.jpg\n000002.jpg\n123456.jpg\n")
    write(tmp_path / "mafl_testing.txt", "000003.jpg\n")
    return tmp_path


CELEBA_ROWS = [f"{i:06d}.jpg 69 109 106 113 77 142 73 152 108 154" for i in range(1, 5)]


def test_celeba_good_and_splits(tmp_path):
    d = celeba_dir(tmp_path, CELEBA_ROWS)
    ix = read_index(f"celeba:{d}")
    assert len(ix) == 4 and ix.records[0].crop == "celeba"
    assert ix.records[0].meta["scale"] == 0.5
    np.testing.assert_allclose(ix.records[0].landmarks[0], [34.5, 54.5])
    names = lambda spec: [r.path.name for r in read_index(spec).records]  # noqa: E731
    assert names(f"celeba:{d}?split=mafl_train") == ["000001.jpg", "000002.jpg"]
    assert names(f"celeba:{d}?split=mafl_test") == ["000003.jpg"]
    assert names(f"celeba:{d}?split=not_mafl") == ["000004.jpg"]
    assert names(f"celeba:{d}?ids=2-3") == ["000002.jpg", "000003.jpg"]
    bad(f"celeba:{d}?split=bogus", "split='bogus' must be one of all, mafl_train, mafl_test, not_mafl")
    bad(f"celeba:{d}?ids=3-1", "range 3-1 is empty")


def test_celeba_full_size_images(tmp_path):
    d = celeba_dir(tmp_path, CELEBA_ROWS, size=(178, 218))
    r = read_index(f"celeba:{d}").records[0]
    assert r.meta["scale"] == 1.0
    np.testing.assert_allclose(r.landmarks[0], [69, 109])


@pytest.mark.parametrize(
    "row, parts",
    [
        ("000002.jpg 69 109 106 113 77 142 73 152 108", ["expected 11 columns", "got 10"]),
        ("000002.jpg 69 109 106 113 77 142 73 15z 108 154", ["non-numeric coordinate '15z'"]),
        ("000002.jpg 69 109 106 113 77 142 73 NaN 108 154", ["'NaN' is not finite"]),
        (
            "000001.jpg 69 109 106 113 77 142 73 152 108 154",
            ["duplicate entry for 000001.jpg (first at line 3)"],
        ),
    ],
)
def test_celeba_bad_row(tmp_path, row, parts):
    d = celeba_dir(tmp_path, [CELEBA_ROWS[0], row, CELEBA_ROWS[2]])
    bad(f"celeba:{d}", "list_landmarks_align_celeba.txt:4: ", *parts)
    skipped(f"celeba:{d}", 2, 1, "list_landmarks_align_celeba.txt:4")


def test_celeba_count_line(tmp_path):
    d = celeba_dir(tmp_path, CELEBA_ROWS, count=5)
    bad(f"celeba:{d}", "list_landmarks_align_celeba.txt:1: ", "line 1 says 5 rows but the file has 4")
    skipped(f"celeba:{d}", 4, 1, "list_landmarks_align_celeba.txt:1")


def test_celeba_missing_files(tmp_path):
    png(tmp_path / "img_align_celeba_half" / "000001.jpg", 89, 109)
    bad(f"celeba:{tmp_path}", "list_landmarks_align_celeba.txt", "not found")
    d = celeba_dir(tmp_path, CELEBA_ROWS)
    (d / "mafl_testing.txt").unlink()
    bad(f"celeba:{d}?split=mafl_test", "mafl_testing.txt", "MAFL testing list not found")
    bad(f"celeba:{d}?split=not_mafl", "mafl_testing.txt")
    assert len(read_index(f"celeba:{d}?split=mafl_train")) == 2


def test_celeba_image_sizes(tmp_path):
    d = celeba_dir(tmp_path, CELEBA_ROWS)
    png(d / "img_align_celeba_half" / "000003.jpg", 89, 150)  # not a uniform scale of 178x218
    png(d / "img_align_celeba_half" / "000004.jpg", 178, 218)  # a different size from the others
    bad(f"celeba:{d}", "list_landmarks_align_celeba.txt:5: ", "89x150, not a uniform scale")
    skipped(
        f"celeba:{d}",
        2,
        2,
        "list_landmarks_align_celeba.txt:6: image",
        "178x218 but the first image is 89x109",
    )


def test_celeba_missing_image(tmp_path):
    d = celeba_dir(tmp_path, CELEBA_ROWS)
    (d / "img_align_celeba_half" / "000001.jpg").unlink()
    bad(f"celeba:{d}", "000001.jpg: image file not found")
    ix, _ = skipped(f"celeba:{d}", 3, 1, "000001.jpg")
    # an unreadable first image still gets the common scale when validation is off
    r = read_index(f"celeba:{d}", validate=False).records[0]
    assert r.meta["scale"] == 0.5 and r.landmarks[0, 0] == pytest.approx(34.5)


# ----------------------------------------------------------------------------- 300w


def pts_text(xy: np.ndarray, header: bool = True) -> str:
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in xy)
    return f"version: 1\nn_points:  {len(xy)}\n{{\n{body}\n}}\n" if header else body + "\n"


def w300_dir(tmp_path: Path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    xy = rng.uniform(20, 40, (68, 2))
    png(tmp_path / "afw" / "afw" / "1_1.jpg", 64, 64)
    write(tmp_path / "afw" / "afw" / "1_1.pts", pts_text(xy))
    png(tmp_path / "helen" / "trainset" / "2_1.png", 64, 64)
    write(tmp_path / "helen" / "trainset" / "2_1.pts", pts_text(xy, header=False))
    write(tmp_path / "boxes.csv", "file,x_min,y_min,x_max,y_max\nafw/afw/1_1.jpg,21,22,39,38\n")
    return tmp_path, xy


def test_300w_good(tmp_path):
    d, xy = w300_dir(tmp_path)
    ix = read_index(f"300w:{d}")
    assert len(ix) == 2 and ix.eyes == (36, 45) and ix.flip_perm == FLIP_PERM
    a, b = ix.records
    assert a.path.name == "1_1.jpg" and b.path.name == "2_1.png" and a.crop == "300w"
    np.testing.assert_allclose(a.landmarks, xy - 1, atol=1e-3)
    np.testing.assert_allclose(b.landmarks, xy - 1, atol=1e-3)
    assert a.box == (20.0, 21.0, 38.0, 37.0)  # boxes.csv, 1-based like the .pts
    assert b.box == pytest.approx(tuple(np.r_[(xy - 1).min(0), (xy - 1).max(0)]), abs=1e-3)  # tight box
    assert [r.path.name for r in read_index(f"300w:{d}?subset=helen/trainset").records] == ["2_1.png"]
    bad(f"300w:{d}?subset=lfpw", "no .pts files found under subset 'lfpw'")


@pytest.mark.parametrize(
    "edit, line, parts",
    [
        (lambda t: t.replace("n_points:  68", "n_points:  67"), 2, ["n_points says 67"]),
        (lambda t: t.replace("}\n", ""), 71, ["missing closing '}'"]),
        (lambda t: t.replace("{\n", "{\n1.0 2.0 3.0\n", 1), 4, ["expected 2 columns (x y), got 3"]),
        (lambda t: t.replace("{\n", "{\nabc 3\n", 1), 4, ["non-numeric coordinate 'abc'"]),
    ],
)
def test_300w_bad_pts(tmp_path, edit, line, parts):
    d, _ = w300_dir(tmp_path)
    f = d / "afw" / "afw" / "1_1.pts"
    f.write_text(edit(f.read_text()))
    bad(f"300w:{d}", f"1_1.pts:{line}: ", *parts)
    skipped(f"300w:{d}", 1, 1, f"1_1.pts:{line}")


def test_300w_bad_boxes_and_far_point(tmp_path):
    d, xy = w300_dir(tmp_path)
    write(
        d / "boxes.csv",
        "file,x_min,y_min,x_max,y_max\nafw/afw/1_1.jpg,21,22,39\nafw/afw/1_1.jpg,21,22,9,38\n",
    )
    bad(f"300w:{d}", "boxes.csv:2: ", "expected 5 columns")
    _, log = skipped(f"300w:{d}", 2, 2, "boxes.csv:3: box must have x_min < x_max")
    xy2 = xy.copy()
    xy2[30] = (500, 20)
    write(d / "helen" / "trainset" / "2_1.pts", pts_text(xy2))
    write(d / "boxes.csv", "file,x_min,y_min,x_max,y_max\n")
    bad(f"300w:{d}", "2_1.pts:4: ", "landmark 30 (nose_bridge_3)", "far outside the 64x64 image")


def test_300w_missing_image_and_empty(tmp_path):
    d, _ = w300_dir(tmp_path)
    (d / "afw" / "afw" / "1_1.jpg").unlink()
    bad(f"300w:{d}", "1_1.jpg: image file not found")
    skipped(f"300w:{d}", 1, 1, "1_1.jpg")
    (tmp_path / "empty").mkdir()
    bad(f"300w:{tmp_path / 'empty'}", "empty: no .pts files found")


def test_300w_flip_perm_is_mirror():
    p = np.array(FLIP_PERM)
    assert (p[p] == np.arange(68)).all() and p[36] == 45 and p[0] == 16 and p[30] == 30 and p[48] == 54


# ----------------------------------------------------------------------------- cub


def cub_dir(tmp_path: Path, locs: list[str] | None = None) -> Path:
    root = tmp_path / "CUB_200_2011"
    for sub in ("001.A/a.jpg", "001.A/b.jpg", "002.B/c.jpg"):
        png(root / "images" / sub, 50, 40)
    write(root / "images.txt", "1 001.A/a.jpg\n2 001.A/b.jpg\n3 002.B/c.jpg\n")
    write(root / "train_test_split.txt", "1 1\n2 0\n3 1\n")
    write(root / "image_class_labels.txt", "1 1\n2 1\n3 2\n")
    write(root / "bounding_boxes.txt", "1 5.0 6.0 20.0 10.0\n2 1 1 30 30\n3 0 0 50 40\n")
    write(root / "parts" / "parts.txt", "1 beak\n2 left eye\n3 right eye\n")
    if locs is None:
        locs = [
            f"{i} {p} {10 * p}.5 {5 + i}.0 {0 if (i, p) == (2, 3) else 1}"
            for i in (1, 2, 3)
            for p in (1, 2, 3)
        ]
    write(root / "parts" / "part_locs.txt", "\n".join(locs) + "\n")
    return tmp_path


def test_cub_good(tmp_path):
    d = cub_dir(tmp_path)
    ix = read_index(f"cub:{d}")
    assert ix.names == ("beak", "left_eye", "right_eye") and ix.flip_perm == (0, 2, 1)
    assert len(ix) == 3 and int(sum(r.visible.sum() for r in ix.records)) == 8
    r1, r2, _ = ix.records
    assert r1.path == d / "CUB_200_2011" / "images" / "001.A" / "a.jpg" and r1.crop == "whole"
    assert r1.box == (5.0, 6.0, 25.0, 16.0) and r1.meta["class"] == 1 and r1.meta["is_train"] is True
    np.testing.assert_allclose(r1.landmarks, [[10.5, 6], [20.5, 6], [30.5, 6]])
    assert not r2.visible[2] and (r2.landmarks[2] == 0).all()
    ids = lambda spec: [r.meta["id"] for r in read_index(spec).records]  # noqa: E731
    assert ids(f"cub:{d}/CUB_200_2011?split=train") == [1, 3]
    assert ids(f"cub:{d}?split=test") == [2]
    assert ids(f"cub:{d}?classes=2-5") == [3]


@pytest.mark.parametrize(
    "row, parts",
    [
        ("9 1 10 10 1", ["unknown image id 9 (not in images.txt)"]),
        ("2 4 10 10 1", ["part id 4 out of range 1..3"]),
        ("1 1 10 10 1", ["duplicate entry for image 1, part 1 (first at line 1)"]),
        ("2 1 10 10", ["expected 5 columns (image_id, part_id, x, y, visible), got 4"]),
        ("2 1 10 ten 1", ["non-numeric coordinate 'ten'"]),
        ("2 1 10 nan 1", ["'nan' is not finite"]),
        ("2 1 10 10 2", ["visible must be 0 or 1, got '2'"]),
    ],
)
def test_cub_bad_part_row(tmp_path, row, parts):
    locs = [f"{i} {p} 10 10 1" for i in (1, 2, 3) for p in (1, 2, 3)]
    locs[3] = row  # line 4
    d = cub_dir(tmp_path, locs)
    bad(f"cub:{d}", "part_locs.txt:4: ", *parts)
    ix, _ = skipped(f"cub:{d}", 3, 1, "part_locs.txt:4")
    assert int(sum(r.visible.sum() for r in ix.records)) == 8  # the bad row's part is left unlabelled


def test_cub_bad_tables_and_missing_files(tmp_path):
    d = cub_dir(tmp_path)
    root = d / "CUB_200_2011"
    write(root / "bounding_boxes.txt", "1 5.0 6.0 20.0 10.0\n2 1 1 -3 30\n3 0 0 50 40\n")
    bad(f"cub:{d}", "bounding_boxes.txt:2: ", "box width and height must be positive")
    skipped(f"cub:{d}", 2, 1, "bounding_boxes.txt:2")
    write(root / "bounding_boxes.txt", "1 5.0 6.0 20.0 10.0\n7 1 1 3 30\n")
    bad(f"cub:{d}", "bounding_boxes.txt:2: ", "unknown image id 7")
    write(root / "bounding_boxes.txt", "1 5.0 6.0 20.0 10.0\n")
    write(root / "images.txt", "1 001.A/a.jpg\n1 001.A/b.jpg\n3 002.B/c.jpg\n")
    bad(f"cub:{d}", "images.txt:2: ", "duplicate entry for image id 1 (first at line 1)")
    write(root / "images.txt", "1 001.A/a.jpg\n2 001.A/b.jpg\n3 002.B/c.jpg\n")
    (root / "parts" / "part_locs.txt").unlink()
    bad(f"cub:{d}", "part_locs.txt", "not found")
    (root / "images.txt").unlink()
    bad(f"cub:{d}", "images.txt", "not a CUB-200-2011 folder")


def test_cub_missing_image_and_far_point(tmp_path):
    locs = [f"{i} {p} 10 10 1" for i in (1, 2, 3) for p in (1, 2, 3)]
    locs[4] = "2 2 10 -900 1"
    d = cub_dir(tmp_path, locs)
    bad(f"cub:{d}", "part_locs.txt:4: ", "landmark 1 (left_eye)", "far outside the 50x40 image")
    (d / "CUB_200_2011" / "images" / "001.A" / "a.jpg").unlink()
    skipped(f"cub:{d}", 1, 2, "a.jpg: image file not found", "part_locs.txt:4")


# ----------------------------------------------------------------------------- coco


def coco_data(k_names=("left_eye", "right_eye", "nose")) -> dict:
    k = len(k_names)
    return {
        "images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "keypoints": [5, 6, 2] * k, "bbox": [2, 3, 10, 20]},
            {"id": 11, "image_id": 2, "category_id": 1, "keypoints": [7, 8, 1] + [0, 0, 0] * (k - 1)},
            {"id": 12, "image_id": 2, "category_id": 1, "keypoints": [0, 0, 0] * k, "num_keypoints": 0},
        ],
        "categories": [{"id": 1, "name": "cat", "keypoints": list(k_names)}],
    }


def coco_dir(tmp_path: Path, data: dict | str, name: str = "kp.json") -> Path:
    png(tmp_path / "a.png")
    png(tmp_path / "b.png")
    write(tmp_path / name, data if isinstance(data, str) else json.dumps(data, indent=1))
    return tmp_path


def test_coco_good(tmp_path):
    d = coco_dir(tmp_path, coco_data())
    ix = read_index(f"coco:{d}")
    assert len(ix) == 2 and ix.names == ("left_eye", "right_eye", "nose") and ix.flip_perm == (1, 0, 2)
    a, b = ix.records
    assert a.box == (2.0, 3.0, 12.0, 23.0) and a.crop == "box" and a.meta["annotation_id"] == 10
    assert b.box is None and b.visible.tolist() == [True, False, False]
    np.testing.assert_allclose(b.landmarks, [[7, 8], [0, 0], [0, 0]])
    assert len(read_index(f"coco:{d / 'kp.json'}")) == 2


def test_coco_malformed_json(tmp_path):
    text = json.dumps(coco_data(), indent=1)
    lines = text.split("\n")
    lines[5] = lines[5] + ","  # a trailing comma on line 6
    d = coco_dir(tmp_path, "\n".join(lines))
    err = bad(f"coco:{d}", "kp.json:", "malformed JSON")
    assert err.line is not None and err.line >= 6


@pytest.mark.parametrize(
    "edit, parts",
    [
        (
            lambda a: a[1].update(keypoints=[1, 2, 1, 3]),
            ["annotation id 11: keypoints must be 9 numbers", "got 4"],
        ),
        (lambda a: a[1].update(keypoints=[1, "x", 1] * 3), ["annotation id 11: keypoint value 'x'"]),
        (lambda a: a[1].update(keypoints=[1, float("nan"), 1] * 3), ["annotation id 11: keypoint value nan"]),
        (lambda a: a[1].update(image_id=99), ["annotation id 11: unknown image id 99"]),
        (lambda a: a[1].update(bbox=[1, 2]), ["annotation id 11: bbox must be 4 numbers"]),
        (lambda a: a[1].update(id=10), ["duplicate annotation id 10"]),
        (lambda a: a[1].update(id=[1]), ["annotation #1: annotation id [1] is not a number"]),
        (lambda a: a[1].pop("category_id"), ["annotation id 11: no category_id"]),
        (lambda a: a[1].update(category_id=7), ["annotation id 11: unknown category_id 7"]),
        (lambda a: a[1].update(category_id=[1]), ["annotation id 11: unknown category_id [1]"]),
        (lambda a: a[1].pop("keypoints"), ["annotation id 11: no keypoints"]),
        (lambda a: a[1].update(bbox=[1, 2, -3, 4]), ["annotation id 11: bbox width and height must be >= 0"]),
        (lambda a: a[1].update(num_keypoints=999), ["annotation id 11: num_keypoints 999 but 1 keypoints"]),
        (lambda a: a[1].update(num_keypoints=1.5), ["annotation id 11: num_keypoints 1.5"]),
        (lambda a: a[1].update(keypoints=[7, 8, 7] + [0, 0, 0] * 2), ["keypoint 0 has visibility 7"]),
        (lambda a: a[1].update(image_id=[2]), ["annotation id 11: unknown image id [2]"]),
    ],
)
def test_coco_bad_annotation(tmp_path, edit, parts):
    data = coco_data()
    edit(data["annotations"])
    d = coco_dir(tmp_path, data)
    bad(f"coco:{d}", "kp.json: ", *parts)
    skipped(f"coco:{d}", 1, 1, "annotation id")


def test_coco_file_choice_and_categories(tmp_path):
    d = coco_dir(tmp_path, coco_data())
    write(d / "other.json", json.dumps(coco_data()))
    bad(f"coco:{d}", "2 JSON files in the folder (kp.json, other.json)", "?json=")
    assert len(read_index(f"coco:{d}?json=other.json")) == 2
    data = coco_data()
    data["categories"].append({"id": 2, "name": "dog", "keypoints": ["a", "b"]})
    data["annotations"].append({"id": 20, "image_id": 1, "category_id": 2, "keypoints": [3, 3, 2, 4, 4, 2]})
    write(d / "other.json", json.dumps(data))
    bad(f"coco:{d}?json=other.json", "different keypoint lists", "category=NAME", "cat, dog")
    ix = read_index(f"coco:{d}?json=other.json&category=dog")
    assert ix.names == ("a", "b") and len(ix) == 1
    bad(f"coco:{d}?json=other.json&category=cow", "no keypoint category 'cow'")
    empty = tmp_path / "empty"
    empty.mkdir()
    bad(f"coco:{empty}", "no *.json file")


def test_coco_missing_image_and_far_point(tmp_path):
    data = coco_data()
    data["images"][1]["file_name"] = "nope.png"
    data["annotations"][0]["keypoints"][3] = 400.0
    d = coco_dir(tmp_path, data)
    bad(f"coco:{d}", "kp.json (annotation id 10)", "landmark 1 (right_eye)", "far outside")
    log = SkipLog(skip_bad=True)
    with pytest.raises(InputError, match="no usable samples"):
        read_index(f"coco:{d}", log)
    assert len(log) == 2 and "nope.png: image file not found" in " ".join(map(str, log.skips))


def test_keypoint_flip_permutation_spellings():
    names = [
        "L_Eye",
        "R_Eye",
        "Nose",
        "eyeL",
        "eyeR",
        "forelegL1",
        "forelegR1",
        "Nearknee",
        "Offknee",
        "tail",
    ]
    p = keypoint_flip_permutation(names)
    assert p == (1, 0, 2, 4, 3, 6, 5, 8, 7, 9)
    assert keypoint_flip_permutation(["left_paw", "lefty", "right"]) == (0, 1, 2)  # no counterparts


# ----------------------------------------------------------------------------- folder


def test_folder(tmp_path):
    png(tmp_path / "b" / "2.PNG")
    png(tmp_path / "a.jpg")
    png(tmp_path / "b" / "1.png")
    write(tmp_path / "notes.txt", "x")
    png(tmp_path / ".hidden" / "x.png")
    ix = read_index(f"folder:{tmp_path}")
    assert [r.meta["rel"] for r in ix.records] == ["a.jpg", "b/1.png", "b/2.PNG"]
    assert ix.names == () and ix.records[0].landmarks.shape == (0, 2) and ix.records[0].crop == "whole"
    assert ix.records[0].where == str(tmp_path / "a.jpg")


def test_folder_empty_and_broken(tmp_path):
    (tmp_path / "e").mkdir()
    write(tmp_path / "e" / "readme.txt", "no images")
    bad(f"folder:{tmp_path / 'e'}", f"{tmp_path / 'e'}: no images found")
    png(tmp_path / "f" / "ok.png")
    write(tmp_path / "f" / "broken.jpg", "not a jpeg")
    bad(f"folder:{tmp_path / 'f'}", "broken.jpg: not a readable image")
    skipped(f"folder:{tmp_path / 'f'}", 1, 1, "broken.jpg")
