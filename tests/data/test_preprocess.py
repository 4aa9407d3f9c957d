import numpy as np
import pytest

from equinv.data.preprocess import Preprocess, canvas_box, center_view, preprocess
from equinv.data.sample import make_record

from .helpers import NAMES, dot_centroid, dot_image


def _record(pts, crop, box=None, path="x.png"):
    return make_record(path, np.asarray(pts, np.float32), NAMES, "list.txt", 1, crop=crop, box=box)


@pytest.mark.parametrize(
    "crop,box,size",
    [
        ("whole", None, (150, 150)),
        ("celeba", None, (178, 218)),
        ("box", (30.0, 40.0, 110.0, 120.0), (160, 170)),
        ("landmarks", None, (160, 170)),
        ("300w", (20.0, 30.0, 150.0, 160.0), (170, 180)),  # canvas leaves the image: zero padding
    ],
)
def test_dots_follow_landmarks(crop, box, size):
    pts = np.array([[60.3, 82.7], [101.8, 80.1], [80.5, 111.2]], np.float32)
    img = dot_image(size[0], size[1], pts, sigma=2.5)
    pre = Preprocess(size=96, context=136 / 96)
    s = preprocess(img, _record(pts, crop, box), pre)
    assert s.image.shape == (136, 136, 3)
    for i in range(3):
        c = dot_centroid(s.image, i, s.landmarks[i], r=6)
        assert np.abs(c - s.landmarks[i]).max() < 0.5, (crop, i, c, s.landmarks[i])
    v = center_view(s, pre)
    assert v.image.shape == (96, 96, 3)
    np.testing.assert_allclose(v.landmarks, s.landmarks - 20)


def test_celeba_matches_reference_formula():
    # Reference: y - 30, x 136/178, - 20 (corner convention); ours is exact to within half a pixel.
    pts = np.array([[69, 109], [106, 113], [77, 142]], np.float32)
    pre = Preprocess(size=96, context=136 / 96)
    s = center_view(preprocess(np.zeros((218, 178, 3), np.uint8), _record(pts, "celeba"), pre), pre)
    ref = np.stack([pts[:, 0] * 136 / 178 - 20, (pts[:, 1] - 30) * 136 / 178 - 20], 1)
    assert np.abs(s.landmarks - ref).max() < 0.5


def test_celeba_scaled_copy_uses_same_region():
    pre = Preprocess()
    assert canvas_box(_record([[0, 0]] * 3, "celeba"), (89, 109), pre) == (0.0, 15.0, 89.0, 104.0)


def test_300w_box_is_52px_wide_in_100px_crop():
    pre = Preprocess(size=96, context=136 / 96)
    box = (10.0, 20.0, 114.0, 124.0)  # 104 px wide -> 2 source px per 100-frame px
    x0, y0, x1, y1 = canvas_box(_record([[50, 50]] * 3, "300w", box), (200, 200), pre)
    assert x1 - x0 == pytest.approx(200.0)
    assert (y0 + y1) / 2 == pytest.approx(72.0 - 4.0)


def test_bad_preprocess_values():
    with pytest.raises(ValueError):
        Preprocess(size=4)
    with pytest.raises(ValueError):
        Preprocess(crop="nope")
