import numpy as np
import pytest
import torch
from PIL import Image

from equinv.data.sample import Sample
from equinv.viz.contact_sheet import LABEL_H, PAD, PALETTE, contact_sheet, draw_batch, landmark_colour

NAMES = ("left_eye", "right_eye", "nose")


def _sample(i, h=32, w=32, pts=((10.0, 20.0), (20.0, 8.0), (16.0, 16.0)), vis=(True, True, True)):
    img = np.full((h, w, 3), 128, np.uint8)
    return Sample(img, np.array(pts, np.float32), np.array(vis), NAMES, f"/data/some/dir/img_{i:04d}.png")


def _near(sheet, x, y, colour, r=1):
    """Whether ``colour`` appears within ``r`` px of (x, y)."""
    xi, yi = int(round(x)), int(round(y))
    patch = sheet[yi - r : yi + r + 1, xi - r : xi + r + 1].reshape(-1, 3)
    return (patch == np.array(colour, np.uint8)).all(axis=1).any()


def test_sheet_size_and_markers(tmp_path):
    samples = [_sample(i) for i in range(10)]
    out = contact_sheet(samples, tmp_path / "sheet.png", cols=4, cell=64, legend=False)
    sheet = np.asarray(Image.open(out).convert("RGB"))
    assert sheet.shape == (PAD + 3 * (64 + LABEL_H + PAD), PAD + 4 * (64 + PAD), 3)
    s = 64 / 32
    for i in (0, 5, 9):
        cx0, cy0 = PAD + (i % 4) * (64 + PAD), PAD + (i // 4) * (64 + LABEL_H + PAD)
        for k, (x, y) in enumerate(samples[i].landmarks):
            assert _near(sheet, cx0 + (x + 0.5) * s - 0.5, cy0 + (y + 0.5) * s - 0.5, landmark_colour(k))
            # the marker is small: not painted 8 px away
            assert not _near(
                sheet, cx0 + (x + 0.5) * s - 0.5 + 8, cy0 + (y + 0.5) * s - 0.5, landmark_colour(k)
            )


def test_invisible_points_not_drawn_and_legend_title(tmp_path):
    samples = [_sample(0, vis=(True, False, True)), _sample(1, h=24, w=48, vis=(True, False, True))]
    plain = contact_sheet(samples, tmp_path / "a.png", cols=2, cell=96, legend=False)
    fancy = contact_sheet(samples, tmp_path / "b.png", cols=2, cell=96, title="a title", legend=True)
    a = np.asarray(Image.open(plain).convert("RGB"))
    b = np.asarray(Image.open(fancy).convert("RGB"))
    assert b.shape[1] == a.shape[1] and b.shape[0] > a.shape[0]
    # colour 1 only appears in the legend (which is below the grid), never on a cell
    grid = a
    assert not (grid.reshape(-1, 3) == np.array(PALETTE[1], np.uint8)).all(axis=1).any()
    assert (b.reshape(-1, 3) == np.array(PALETTE[1], np.uint8)).all(axis=1).any()
    assert (grid.reshape(-1, 3) == np.array(PALETTE[0], np.uint8)).all(axis=1).any()


def test_non_square_images_keep_aspect(tmp_path):
    smp = _sample(0, h=24, w=48, pts=((4.0, 20.0), (40.0, 3.0), (24.0, 12.0)))
    out = contact_sheet([smp], tmp_path / "c.png", cols=1, cell=96, legend=False)
    sheet = np.asarray(Image.open(out).convert("RGB"))
    s, oy = 2.0, (96 - 48) // 2
    for k, (x, y) in enumerate(smp.landmarks):
        assert _near(sheet, PAD + (x + 0.5) * s - 0.5, PAD + oy + (y + 0.5) * s - 0.5, landmark_colour(k))
    assert (sheet[PAD + 2, PAD + 48] == 255).all()  # padding above the letterboxed image is background


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_draw_batch(tmp_path, dtype):
    b, h, w = 5, 40, 40
    imgs = torch.rand(b, 3, h, w)
    if dtype == torch.uint8:
        imgs = (imgs * 255).to(torch.uint8)
    lm = torch.tensor([[[10.0, 10.0], [30.0, 25.0]]]).repeat(b, 1, 1)
    lm[:, :, 0] += torch.arange(b)[:, None].float()
    vis = torch.ones(b, 2, dtype=torch.bool)
    out = draw_batch(imgs, lm, vis, tmp_path / "batch.png", names=["a", "b"], cols=3, cell=80, title="views")
    sheet = np.asarray(Image.open(out).convert("RGB"))
    assert sheet.shape[1] == PAD + 3 * (80 + PAD)
    s = 80 / 40
    top = PAD + LABEL_H + PAD  # below the title
    for i in range(b):
        cx0, cy0 = PAD + (i % 3) * (80 + PAD), top + (i // 3) * (80 + LABEL_H + PAD)
        for k in range(2):
            x, y = lm[i, k].tolist()
            assert _near(sheet, cx0 + (x + 0.5) * s - 0.5, cy0 + (y + 0.5) * s - 0.5, landmark_colour(k))


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError):
        contact_sheet([], tmp_path / "x.png")
    with pytest.raises(ValueError):
        draw_batch(torch.zeros(2, 4, 8, 8), torch.zeros(2, 1, 2), None, tmp_path / "x.png")
    assert len({landmark_colour(k) for k in range(40)}) == 40
