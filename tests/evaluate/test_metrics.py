import math

import pytest
import torch

from equinv.evaluate.metrics import iod_error, paper_pck, pck, per_landmark_errors


def test_iod_error_hand_computed():
    gt = torch.tensor([[[0.0, 0.0], [10.0, 0.0], [5.0, 5.0]]])
    pred = torch.tensor([[[0.0, 1.0], [10.0, 0.0], [5.0, 8.0]]])  # errors 1, 0, 3; IOD 10
    assert iod_error(pred, gt, (0, 1)).tolist() == pytest.approx([100 * (1 + 0 + 3) / 3 / 10])
    # invisible points are left out of the mean
    vis = torch.tensor([[True, True, False]])
    assert iod_error(pred, gt, (0, 1), vis).tolist() == pytest.approx([5.0])
    # frame independent: the same in normalised coordinates
    assert iod_error(pred / 47.5 - 1, gt / 47.5 - 1, (0, 1)).tolist() == pytest.approx([100 * 4 / 30], rel=1e-5)
    e = per_landmark_errors(pred, gt, None, vis)
    assert e[0, :2].tolist() == [1.0, 0.0] and math.isnan(e[0, 2].item())


def test_pck_correct():
    gt = torch.zeros(2, 3, 2) + 50
    pred = gt.clone()
    pred[0, 0, 0] += 4.0  # within 0.05 * 96 = 4.8
    pred[0, 1, 0] += 5.0  # outside
    pred[1, 2, 1] += 10.0  # outside, but invisible
    vis = torch.tensor([[True, True, True], [True, True, False]])
    r = pck(pred, gt, vis, size=96)
    assert r["threshold_px"] == pytest.approx(4.8)
    assert r["pck"] == pytest.approx(100 * 4 / 5)
    assert r["per_landmark"] == pytest.approx([100.0, 50.0, 100.0])
    assert r["n_points"] == 5
    assert pck(pred, gt, vis, size=(48, 96))["threshold_px"] == pytest.approx(4.8)  # longer side


def test_paper_pck_truncation_quirk_differs_from_correct_pck():
    # gt at pixel 20 of the 48 frame, prediction 2.9 px away: correct PCK (2.4 px) misses it,
    # the reference truncates 2.9 -> 2 < 2.4 and counts it.
    to_n = lambda px: px * 2 / 47 - 1  # noqa: E731
    gt = torch.tensor([[[to_n(20.0), to_n(20.0)]]])
    pred = torch.tensor([[[to_n(22.9), to_n(20.0)]]])
    vis = torch.ones(1, 1, dtype=torch.bool)
    correct = pck((pred + 1) * 23.5, (gt + 1) * 23.5, vis, size=48)["pck"]
    paper = paper_pck(pred, gt, vis)["pck"]
    assert correct == 0.0 and paper == pytest.approx(100.0)


def test_paper_pck_border_exclusion_and_batch_weighting():
    to_n = lambda px: px * 2 / 47 - 1  # noqa: E731
    # batch 1 (2 images): part 0 correct twice, part 1 wrong once and on the left border (x = 0) once
    # -> part 1 has one counted point (wrong): acc = mean(1.0, 0.0) = 0.5
    # batch 2 (1 image): part 0 correct, part 1 invisible -> acc = 1.0
    gt = torch.tensor([
        [[to_n(10), to_n(10)], [to_n(30), to_n(30)]],
        [[to_n(10), to_n(10)], [to_n(0), to_n(30)]],
        [[to_n(10), to_n(10)], [to_n(30), to_n(30)]],
    ])
    pred = gt.clone()
    pred[0, 1, 0] += 10 * 2 / 47
    pred[1, 1, 0] += 10 * 2 / 47  # excluded anyway (gt x = 0)
    vis = torch.tensor([[True, True], [True, True], [True, False]])
    r = paper_pck(pred, gt, vis, batch_size=2)
    assert r["pck"] == pytest.approx(100 * (0.5 * 2 + 1.0 * 1) / 3)
    # the correct PCK counts the border point (wrong) too: 3 of 5 visible points
    c = pck((pred + 1) * 23.5, (gt + 1) * 23.5, vis, size=48)
    assert c["pck"] == pytest.approx(60.0)
