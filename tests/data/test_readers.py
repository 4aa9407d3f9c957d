"""Every reader on the real files in ../shared/data (counts from its README)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from equinv.data.spec import read_index
from equinv.errors import InputError

pytestmark = pytest.mark.realdata

FACE_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")


def _first_row(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        return fh.readline().split()


@pytest.fixture(scope="module")
def mtfl(shared_data):
    return read_index(f"mtfl:{shared_data / 'mtfl'}")


@pytest.fixture(scope="module")
def facepoint_train(shared_data):
    return read_index(f"facepoint:{shared_data / 'mtfl'}")


@pytest.fixture(scope="module")
def celeba(shared_data):
    return read_index(f"celeba:{shared_data / 'celeba'}")


@pytest.fixture(scope="module")
def w300(shared_data):
    return read_index(f"300w:{shared_data / '300w'}")


def test_mtfl_training(mtfl, shared_data):
    assert len(mtfl) == 10_000
    assert mtfl.names == FACE_NAMES and mtfl.eyes == (0, 1)
    assert mtfl.flip_perm == (1, 0, 2, 4, 3)  # eyes and mouth corners swap, nose stays
    assert all(r.box is not None and r.crop == "box" for r in mtfl.records)  # lfw/net: facepoint boxes
    r = mtfl.records[0]
    row = _first_row(shared_data / "mtfl" / "training.txt")
    assert r.path == shared_data / "mtfl" / "lfw_5590" / "Aaron_Eckhart_0001.jpg"
    v = np.array(row[1:11], float) - 1
    np.testing.assert_allclose(r.landmarks, np.stack([v[:5], v[5:]], 1), atol=1e-4)
    assert (
        r.meta["gender"] == int(row[11]) and r.meta["pose"] == int(row[14]) and r.meta["size"] == (250, 250)
    )
    assert r.where.endswith("training.txt:1")
    net = [r for r in mtfl.records if r.path.parent.name == "net_7876"]
    assert net and all(max(r.meta["size"]) <= 200 for r in net)


def test_mtfl_agrees_with_facepoint_lists(mtfl, facepoint_train):
    """training.txt (1-based) and trainImageList.txt (0-based) label the same faces identically."""
    fp = {str(r.path).lower(): r for r in facepoint_train.records}
    assert len(fp) == len(mtfl) == 10_000
    d = np.array([r.landmarks - fp[str(r.path).lower()].landmarks for r in mtfl.records])
    assert np.abs(d).max() < 1e-3
    assert all(r.box == fp[str(r.path).lower()].box for r in mtfl.records)


def test_facepoint_lists(facepoint_train, shared_data):
    assert len(facepoint_train) == 10_000
    test = read_index(f"facepoint:{shared_data / 'mtfl'}?list=cnn_facepoint_lists/testImageList.txt")
    assert len(test) == 3_466
    train_paths = {str(r.path).lower() for r in facepoint_train.records}
    test_paths = {str(r.path).lower() for r in test.records}
    assert not train_paths & test_paths and len(train_paths | test_paths) == 13_466
    r = test.records[0]
    row = _first_row(shared_data / "mtfl" / "cnn_facepoint_lists" / "testImageList.txt")
    left, right, top, bottom = map(float, row[1:5])
    assert r.box == (left, top, right, bottom) and r.crop == "box"
    np.testing.assert_allclose(r.landmarks, np.array(row[5:15], float).reshape(5, 2), atol=1e-4)
    # the list file itself as PATH: images resolve against the MTFL root
    same = read_index(f"facepoint:{shared_data / 'mtfl' / 'cnn_facepoint_lists' / 'testImageList.txt'}")
    assert [x.path for x in same.records] == [x.path for x in test.records]


def test_celeba(celeba, shared_data):
    assert len(celeba) == 9_000 and celeba.names == FACE_NAMES and celeba.eyes == (0, 1)
    r = celeba.records[0]
    assert r.path.name == "000001.jpg" and r.crop == "celeba"
    assert r.meta["scale"] == 0.5 and r.meta["size"] == (89, 109)
    row = open(shared_data / "celeba" / "list_landmarks_align_celeba.txt").read().splitlines()[2].split()
    assert row[0] == "000001.jpg"
    np.testing.assert_allclose(r.landmarks, np.array(row[1:], float).reshape(5, 2) * 0.5)
    assert {x.meta["scale"] for x in celeba.records} == {0.5}


def test_celeba_mafl_splits(shared_data):
    root = shared_data / "celeba"
    split = {
        s: {r.path.name for r in read_index(f"celeba:{root}?split={s}").records}
        for s in ("mafl_train", "mafl_test", "not_mafl")
    }
    assert all(split.values())
    assert not split["mafl_train"] & split["mafl_test"]
    assert not split["not_mafl"] & (split["mafl_train"] | split["mafl_test"])
    assert sum(len(v) for v in split.values()) == 9_000
    ids = read_index(f"celeba:{root}?ids=1-100&split=all", validate=False)
    assert [r.meta["id"] for r in ids.records] == list(range(1, 101))
    with pytest.raises(InputError, match="no usable samples"):  # ids 9001-10000 are held back
        read_index(f"celeba:{root}?ids=9001-10000", validate=False)


def test_300w(w300, shared_data):
    assert len(w300) == 1_207 and len(w300.names) == 68 and w300.eyes == (36, 45)
    subsets = {}
    for r in w300.records:
        subsets[r.path.parts[-3]] = subsets.get(r.path.parts[-3], 0) + 1
    assert subsets == {"afw": 337, "helen": 870}
    assert len(read_index(f"300w:{shared_data / '300w'}?subset=afw", validate=False)) == 337
    assert len(read_index(f"300w:{shared_data / '300w'}?subset=helen/trainset", validate=False)) == 870
    # boxes.csv (1-based like the .pts) and coordinates = .pts - 1
    csv = {}
    for line in (shared_data / "300w" / "boxes.csv").read_text().splitlines()[1:]:
        f, *v = line.split(",")
        csv[f] = np.array(v, float) - 1
    for r in w300.records[::97]:
        rel = r.path.relative_to(shared_data / "300w").as_posix()
        np.testing.assert_allclose(r.box, csv[rel], atol=1e-4)
        assert r.crop == "300w" and r.meta["box_source"] == "boxes.csv"
        lines = r.path.with_suffix(".pts").read_text().splitlines()
        pts = np.array([ln.split() for ln in lines[3:71]], float)
        np.testing.assert_allclose(r.landmarks, pts - 1, atol=1e-4)


def test_300w_flip_perm_is_a_mirror(w300):
    p = np.array(w300.flip_perm)
    assert (p[p] == np.arange(68)).all() and p[36] == 45 and p[45] == 36
    # on real faces, flipping x and permuting keeps the subject's right eye (36) on the image left
    xs = np.array([r.landmarks[:, 0] for r in w300.records])
    w = np.array([r.meta["size"][0] for r in w300.records], float)[:, None]
    flipped = (w - 1 - xs)[:, p]
    assert np.mean(xs[:, 36] < xs[:, 45]) > 0.95 and np.mean(flipped[:, 36] < flipped[:, 45]) > 0.95
    assert np.mean(flipped[:, 0] < flipped[:, 16]) > 0.95


def test_cub(shared_data):
    ix = read_index(f"cub:{shared_data / 'cub'}")
    assert len(ix) == 1_500 and len(ix.names) == 15
    assert int(sum(r.visible.sum() for r in ix.records)) == 17_503
    n = ix.names
    for a, b in (("left_eye", "right_eye"), ("left_leg", "right_leg"), ("left_wing", "right_wing")):
        assert ix.flip_perm[n.index(a)] == n.index(b) and ix.flip_perm[n.index(b)] == n.index(a)
    r = ix.records[0]
    x, y, w, h = map(float, _first_row(shared_data / "cub" / "CUB_200_2011" / "bounding_boxes.txt")[1:])
    assert r.box == pytest.approx((x, y, x + w, y + h)) and r.crop == "whole" and r.meta["class"] == 1
    assert all(not r.landmarks[~r.visible].any() for r in ix.records)
    assert len(read_index(f"cub:{shared_data / 'cub' / 'CUB_200_2011'}?split=train", validate=False)) == 1_500
    labels = (shared_data / "cub" / "CUB_200_2011" / "image_class_labels.txt").read_text().split()
    n10 = sum(1 <= int(c) <= 10 for c in labels[1::2])
    assert len(read_index(f"cub:{shared_data / 'cub'}?classes=1-10", validate=False)) == n10


COCO_FOLDERS = ("ap10k", "animalpose", "macaque", "horse10", "atrw", "zebra", "fly", "locust")


@pytest.mark.parametrize("name", COCO_FOLDERS)
def test_coco(shared_data, name):
    folder = shared_data / "coco_keypoints" / name
    ix = read_index(f"coco:{folder}")
    (jf,) = folder.glob("*.json")
    data = json.loads(jf.read_text())
    labelled = [a for a in data["annotations"] if any(v > 0 for v in a["keypoints"][2::3])]
    assert len(ix) == len(labelled) > 0
    assert list(ix.names) == data["categories"][0]["keypoints"]
    p = np.array(ix.flip_perm)
    assert (p[p] == np.arange(len(p))).all()
    for r, a in zip(ix.records, labelled, strict=True):
        kp = np.array(a["keypoints"], float).reshape(-1, 3)
        assert r.visible.tolist() == (kp[:, 2] > 0).tolist()
        np.testing.assert_allclose(r.landmarks[r.visible], kp[kp[:, 2] > 0, :2], atol=1e-4)
        x, y, w, h = a["bbox"]
        assert r.box == pytest.approx((x, y, x + w, y + h)) and r.crop == "box"


@pytest.mark.parametrize(
    "name, pairs",
    [
        ("animalpose", [("L_Eye", "R_Eye"), ("L_F_Paw", "R_F_Paw")]),
        ("ap10k", [("left_eye", "right_eye"), ("left_back_paw", "right_back_paw")]),
        ("fly", [("eyeL", "eyeR"), ("forelegL1", "forelegR1"), ("wingL", "wingR")]),
        ("locust", [("anttipL", "anttipR"), ("hindlegL4", "hindlegR4")]),
        ("zebra", [("forelegL1", "forelegR1")]),
        ("horse10", [("Nearknee", "Offknee"), ("Nearhindfoot", "Offhindfoot")]),
    ],
)
def test_coco_flip_pairs(shared_data, name, pairs):
    ix = read_index(f"coco:{shared_data / 'coco_keypoints' / name}", validate=False)
    n = ix.names
    for a, b in pairs:
        assert ix.flip_perm[n.index(a)] == n.index(b)
    swapped = sum(i != j for i, j in enumerate(ix.flip_perm))
    assert swapped == 2 * sum(1 for i, j in enumerate(ix.flip_perm) if i < j)


def test_folder_unlabeled_birds(shared_data):
    ix = read_index(f"folder:{shared_data / 'cub' / 'birds_unlabeled'}")
    assert len(ix) == 4_567 and ix.names == ()
    assert all(r.landmarks.shape == (0, 2) and r.crop == "whole" for r in ix.records)
    assert ix.records[0].meta["size"] == (227, 227)
