"""Figures of dense representations (equinv.viz.maps)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from equinv.viz.contact_sheet import landmark_colour
from equinv.viz.maps import blend_parts, figure_size, match_figure, part_colours, parts_figure, pca_figure


def _imgs(b=3, s=40):
    return torch.randint(0, 256, (b, 3, s, s), dtype=torch.uint8)


def test_pca_figure_size(tmp_path):
    p = pca_figure(_imgs(), torch.rand(3, 3, 10, 10), tmp_path / "pca.png", cell=50)
    assert Image.open(p).size == figure_size(3, 5, 50)


def test_parts_figure_size_and_palette(tmp_path):
    lab = torch.randint(0, 5, (5, 12, 12))
    p = parts_figure(_imgs(5), lab, tmp_path / "parts.png", cell=40, cols=2, strength=torch.rand(5, 12, 12))
    assert Image.open(p).size == figure_size(3, 4, 40)
    col = part_colours(np.array([[0, 3]]))
    assert tuple(col[0, 1]) == landmark_colour(3)
    white = np.full((8, 8, 3), 255, np.uint8)
    full = blend_parts(white, np.zeros((4, 4), int), alpha=1.0)
    assert (full == np.array(landmark_colour(0), np.uint8)).all()


def test_match_figure_size(tmp_path):
    lm = torch.rand(4, 2) * 39
    pred = torch.rand(6, 4, 2) * 39
    p = match_figure(_imgs(1)[0], lm, _imgs(6), pred, tmp_path / "m.png", truth=pred + 1,
                     truth_visible=torch.rand(6, 4) > 0.3, cell=64, cols=3)
    assert Image.open(p).size == figure_size(3, 3, 64)
    hwc = np.zeros((2, 40, 40, 3), np.uint8)  # (B, H, W, 3) input also accepted
    p2 = match_figure(hwc[0], lm, hwc, pred[:2], tmp_path / "m2.png", cell=32, cols=5)
    assert Image.open(p2).size == figure_size(1, 3, 32)
