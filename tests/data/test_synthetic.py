import os
import time

import numpy as np
import pytest
from PIL import Image

import equinv.data.synthetic as syn
from equinv.data.dataset import LandmarkDataset
from equinv.data.image_io import load_rgb
from equinv.data.paths import cache_root
from equinv.data.preprocess import Preprocess
from equinv.data.spec import read_index
from equinv.errors import InputError

MTFL5 = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")


def _files(d):
    return sorted(p.name for p in d.iterdir())


def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    a = syn.generate_synthetic(6, seed=3, size=64, root=tmp_path / "a")
    b = syn.generate_synthetic(6, seed=3, size=64, root=tmp_path / "b")
    c = syn.generate_synthetic(6, seed=4, size=64, root=tmp_path / "c")
    assert _files(a) == _files(b)
    assert len([f for f in _files(a) if f.endswith("_mask.png")]) == 6
    for f in _files(a):
        if f != "meta.json":  # meta records the generation time
            assert (a / f).read_bytes() == (b / f).read_bytes(), f
    ia, ic = syn.load_synthetic(a), syn.load_synthetic(c)
    for ra, rc in zip(ia.records, ic.records, strict=True):
        assert not np.allclose(ra.landmarks, rc.landmarks)
        assert not np.array_equal(load_rgb(ra.path), load_rgb(rc.path))


def test_image_i_does_not_depend_on_n(tmp_path):
    small = syn.load_synthetic(syn.generate_synthetic(3, seed=1, size=64, root=tmp_path))
    big = syn.load_synthetic(syn.generate_synthetic(5, seed=1, size=64, root=tmp_path))
    for rs, rb in zip(small.records, big.records[:3], strict=True):
        assert np.array_equal(rs.landmarks, rb.landmarks)
        assert rs.path.read_bytes() == rb.path.read_bytes()


def test_index_fields(tmp_path):
    idx = syn.load_synthetic(syn.generate_synthetic(4, seed=0, size=96, root=tmp_path))
    assert idx.kind == "synthetic" and len(idx) == 4
    assert idx.names[:5] == MTFL5 and len(idx.names) == 10 and idx.eyes == (0, 1)
    perm = idx.flip_perm
    assert [idx.names[perm[i]] for i in range(5)] == [
        "right_eye",
        "left_eye",
        "nose",
        "right_mouth",
        "left_mouth",
    ]
    assert idx.names[perm[idx.names.index("left_ear")]] == "right_ear"
    assert perm[idx.names.index("chin")] == idx.names.index("chin")
    for r in idx.records:
        assert r.crop == "whole" and r.visible.all() and r.landmarks.dtype == np.float32
        assert os.path.isfile(r.meta["mask"]) and r.path.suffix == ".png"
        assert load_rgb(r.path).shape == (96, 96, 3)
        x0, y0, x1, y1 = r.box
        assert 0 < x1 - x0 < 96 and 0 < y1 - y0 < 96
        # left is on the image's left (rotation is at most 20 degrees)
        assert r.landmarks[0, 0] < r.landmarks[1, 0] and r.landmarks[3, 0] < r.landmarks[4, 0]


def test_csv_matches_render(tmp_path):
    d = syn.generate_synthetic(3, seed=5, size=128, root=tmp_path)
    idx = syn.load_synthetic(d)
    for i, r in enumerate(idx.records):
        face = syn.render_face(5, i, 128)
        np.testing.assert_allclose(r.landmarks, face.landmarks, atol=1e-4)
        assert np.array_equal(load_rgb(r.path), face.image)
        assert np.array_equal(np.asarray(Image.open(r.meta["mask"])), face.mask)


def test_renderer_is_exact_in_pixel_centre_convention():
    bg = np.zeros((32 * syn.SS, 32 * syn.SS, 3), np.uint8)
    cv = syn._Canvas(32, bg)
    cx, cy = 10.3, 17.65
    fn, bb = syn._ellipse(cx, cy, 3.2, 2.1, 0.4)
    cv.paint(fn, bb, (255, 255, 255), fg=True)
    img, cov = cv.finish()
    w = img[:, :, 0].astype(np.float64)
    yy, xx = np.mgrid[0:32, 0:32]
    assert abs((w * xx).sum() / w.sum() - cx) < 0.03
    assert abs((w * yy).sum() / w.sum() - cy) < 0.03
    assert np.array_equal(cov > 0, img[:, :, 0] > 0)


@pytest.mark.parametrize("clutter", [True, False])
def test_landmarks_lie_on_drawn_features(clutter):
    tol = 14  # pixel noise (sigma 2) and rounding
    for i in range(30):
        f = syn.render_face(11, i, 128, clutter)
        for k, name in enumerate(syn.NAMES):
            x, y = f.landmarks[k]
            px = f.image[int(round(y)), int(round(x))].astype(np.float32)
            if name.endswith("_eye"):  # pupil and iris (both dark) cover the pixel
                lo = np.minimum(syn.PUPIL, f.colours["iris"]) - tol
                hi = np.maximum(syn.PUPIL, f.colours["iris"]) + tol
                assert ((px >= lo) & (px <= hi)).all(), (i, name, px)
            else:
                assert np.abs(px - f.colours[name]).max() <= tol, (i, name, px, f.colours[name])
            assert f.mask[int(round(y)), int(round(x))] == 255, (i, name)


def test_masks_are_binary_figure_ground():
    fracs = []
    for i in range(20):
        f = syn.render_face(2, i, 64)
        assert set(np.unique(f.mask)) <= {0, 255}
        assert f.mask[0, 0] == 0 and f.mask[0, -1] == 0  # top corners are background
        fracs.append((f.mask > 0).mean())
    assert 0.15 < np.mean(fracs) < 0.6


def test_pose_and_shape_vary():
    lms = np.stack([syn.render_face(0, i, 128).landmarks for i in range(40)])
    d = lms[:, 1] - lms[:, 0]
    iod = np.hypot(d[:, 0], d[:, 1])
    angle = np.degrees(np.arctan2(d[:, 1], d[:, 0]))
    assert iod.max() / iod.min() > 1.2 and angle.min() < -8 and angle.max() > 8
    assert lms[:, 2].std(axis=0).min() > 3  # the nose moves around by pixels
    assert np.all(lms > 0) and np.all(lms < 127)


def test_generation_is_cached_and_atomic(tmp_path, monkeypatch):
    monkeypatch.setenv("EQUINV_CACHE", str(tmp_path / "cache"))
    d = syn.generate_synthetic(5, seed=0, size=64)
    assert d.parent == cache_root() / "synthetic" and "n5" in d.name and "seed0" in d.name
    stamp = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    calls = []
    monkeypatch.setattr(syn, "render_face", lambda *a, **k: calls.append(a))
    t = time.perf_counter()
    assert syn.generate_synthetic(5, seed=0, size=64) == d
    assert time.perf_counter() - t < 1.0 and not calls
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == stamp
    assert [p.name for p in d.parent.iterdir()] == [d.name]  # no temp dir left behind
    # other parameters are other keys
    assert syn._key(5, 0, 64, True) != syn._key(5, 0, 64, False) != syn._key(5, 1, 64, False)


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(syn, "render_face", boom)
    with pytest.raises(RuntimeError):
        syn.generate_synthetic(3, root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_spec_through_read_index():
    idx = read_index("synthetic:16?seed=1&size=64")
    assert len(idx) == 16 and idx.kind == "synthetic" and idx.names[:5] == MTFL5
    assert idx.records[0].meta["size"] == (64, 64)
    assert str(idx.root).startswith(str(cache_root()))
    again = read_index("synthetic:16?seed=1&size=64")
    assert [r.path for r in again.records] == [r.path for r in idx.records]
    other = read_index("synthetic:16?seed=2&size=64&clutter=0")
    assert other.root != idx.root
    ds = LandmarkDataset(idx, Preprocess(size=48), cache=False)
    s = ds.sample(3)
    canvas = Preprocess(size=48).resolved("synthetic").canvas
    assert s.image.shape == (canvas, canvas, 3)
    np.testing.assert_allclose(s.landmarks, (idx.records[3].landmarks + 0.5) * canvas / 64 - 0.5, atol=1e-3)


@pytest.mark.parametrize(
    "spec",
    [
        "synthetic:abc",
        "synthetic:0",
        "synthetic:4?size=8",
        "synthetic:4?clutter=2",
        "synthetic:4?seed=x",
        "synthetic:4?colour=1",
    ],
)
def test_bad_specs_are_input_errors(spec):
    with pytest.raises(InputError):
        read_index(spec)
