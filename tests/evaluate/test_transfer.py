"""Landmark transfer by nearest neighbour (equinv.evaluate.transfer) and ``equinv match``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from equinv.cli import main
from equinv.coords import canvas_to_source, source_to_canvas
from equinv.data.spec import split_index
from equinv.evaluate.transfer import transfer_landmarks


def _field(d: int, size: int, seed: int = 0, smooth: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, d, size, size, generator=g)
    if smooth:
        x = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    return F.normalize(x, dim=1)[0]


def test_identity_returns_reference_landmarks_exactly():
    desc = _field(16, 32, smooth=False)
    lm = torch.tensor([[3.0, 4.0], [0.0, 0.0], [31.0, 31.0], [17.0, 9.0]])
    pred = transfer_landmarks(desc, lm, desc[None].repeat(3, 1, 1, 1))
    assert pred.shape == (3, 4, 2)
    assert torch.equal(pred, lm.expand(3, -1, -1))


def test_translated_copy_recovers_translation_hard_and_soft():
    big = _field(24, 48, seed=1)
    ref = big[:, :32, :32]
    shifts = [(0, 0), (5, 2), (9, 11)]
    tgt = torch.stack([big[:, dy : dy + 32, dx : dx + 32] for dx, dy in shifts])
    lm = torch.tensor([[12.0, 14.0], [20.0, 18.0], [15.0, 25.0]])
    want = torch.stack([lm - torch.tensor([dx, dy], dtype=torch.float32) for dx, dy in shifts])
    assert torch.equal(transfer_landmarks(ref, lm, tgt, chunk=2), want)
    soft = transfer_landmarks(ref, lm, tgt, soft=True, radius=2, temperature=0.05)
    assert (soft - want).abs().max() < 0.5


def test_grid_to_image_frame_and_scores():
    desc = _field(8, 24, seed=2, smooth=False)
    # pixel centres of 4-px cells of a 96 frame sit at 4i + 1.5
    lm = torch.tensor([[4 * 3 + 1.5, 4 * 7 + 1.5], [4 * 20 + 1.5, 4 * 0 + 1.5]])
    pred, score = transfer_landmarks(desc, lm, desc[None], image_size=96, return_scores=True)
    assert torch.allclose(pred[0], lm)
    assert torch.allclose(score, torch.ones_like(score), atol=1e-5)


def test_spec_index_and_box_mapping_round_trip():
    assert split_index("celeba:/d?split=mafl_test#7") == ("celeba:/d?split=mafl_test", 7)
    assert split_index("synthetic:16?size=64") == ("synthetic:16?size=64", 0)
    box = (10.0, 20.0, 146.0, 156.0)  # 136-px source square → identity scale, offset (10, 20)
    p = np.array([[0.0, 0.0], [50.5, 70.25]])
    s = canvas_to_source(p, box, 136)
    assert np.allclose(s, p + [10, 20])
    assert np.allclose(source_to_canvas(s, (0, 0, 68, 68), 136), (s + 0.5) * 2 - 0.5)
    assert np.allclose(source_to_canvas(canvas_to_source(p, (3, 4, 90, 91), 136), (3, 4, 90, 91), 136), p)


def test_cli_match_random_init_writes_json_and_png(tmp_path):
    out = tmp_path / "m"
    rc = main(["match", "--backbone", "random", "--arch", "resnet18", "--reference", "synthetic:16?size=64#2",
               "--targets", "synthetic:16?size=64", "--max-targets", "6", "--n-figure", "5", "--cell", "64",
               "--cols", "3", "--out", str(out), "--quiet", "--device", "cpu"])
    assert rc == 0
    res = json.loads((out / "matches.json").read_text())
    k = len(res["names"])
    assert res["reference"]["index"] == 2 and len(res["targets"]) == 6
    t = res["targets"][2]  # the reference itself: best score = 4 layers x cosine 1 (ties on flat regions)
    assert np.asarray(t["landmarks_96"]).shape == (k, 2) and np.asarray(t["landmarks_image"]).shape == (k, 2)
    assert np.allclose(t["score"], 4.0, atol=1e-2)
    same = np.abs(np.asarray(t["landmarks_96"]) - np.round(res["reference"]["landmarks_96"])).max(-1) <= 0.5
    assert same.sum() >= k - 2
    # synthetic 64-px images fill the 136 canvas: 96-frame px q → source (q + 20 + 0.5)·64/136 − 0.5
    q = np.asarray(t["landmarks_96"])
    assert np.allclose(t["landmarks_image"], (q + 20.5) * 64 / 136 - 0.5, atol=1e-3)
    assert "summary" in res and res["summary"]["n_points"] > 0 and t["mean_error_96"] is not None
    img = Image.open(out / "matches.png")
    assert img.size[0] > 3 * 64 and img.size[1] > 2 * 64


def test_cli_match_unknown_backbone_is_input_error(tmp_path, capsys):
    rc = main(["match", "--backbone", str(tmp_path / "nope"), "--reference", "synthetic:4?size=64",
               "--targets", "synthetic:4?size=64", "--out", str(tmp_path), "--quiet", "--device", "cpu"])
    assert rc == 2 and "backbone" in capsys.readouterr().err


@pytest.mark.slow
def test_trained_model_transfers_closer_than_random_model():
    """On TPS-warped copies, landmarks transferred by a trained model land closer to the truth than by a random one.

    Choice of "trained model" (no pretrained weights offline; MoCo pretraining is far too slow for a unit test):
    both models are the same architecture, a frozen random-init ResNet18 hypercolumn (per-layer L2-normalised)
    followed by a 32-d linear projector, i.e. the paper's "+proj." model on a random trunk. The *trained* model
    fits the projector for a few dozen Adam steps with the paper's equivariance objective (Eq. 3: expected
    grid distance ``Σ_u p(u|v)·|u − g(v)|`` between a warped pixel's match and its true source position) on
    TPS-warped pairs of 24 synthetic faces; the *random* model keeps the projector's random initialisation.
    Evaluation uses 8 held-out faces, each matched to its own TPS-warped copy (warps drawn with another seed),
    hard nearest neighbour at 96², error against the exactly transported landmarks. The trunk is shared, so the
    only difference is training. (The raw random hypercolumn is not the comparison: its 960 dimensions already
    match a same-identity warp fairly well; the projector is what training changes.)
    """
    from equinv.augment.tps import sample_tps, sampling_map, scaled, warp_images, warp_landmarks
    from equinv.data.dataset import LandmarkDataset
    from equinv.data.preprocess import Preprocess
    from equinv.data.spec import read_index
    from equinv.features.descriptors import descriptor_maps
    from equinv.features.stats import prepare_input
    from equinv.models.hypercolumn import Hypercolumn, frozen_trunk, reference_taps

    torch.manual_seed(0)
    ds = LandmarkDataset(read_index("synthetic:32?size=64"), Preprocess(size=96))
    ds.prepare(progress=False)
    b = ds.__getitems__(list(range(32)))
    m, s = ds.pre.margin, ds.pre.size
    imgs = b["image"][:, :, m : m + s, m : m + s].float() / 255
    lm, vis = b["landmarks"] - m, b["visible"]
    hc = Hypercolumn(frozen_trunk("resnet18", None, seed=0), reference_taps(4), 24)

    def feats(x, size):
        return descriptor_maps(hc, prepare_input(x), size)

    n_train, grid, cfg = 24, 24, scaled("eval", 2.0)
    train, test = imgs[:n_train], imgs[n_train:]
    with torch.no_grad():
        p = sample_tps(n_train, cfg, torch.Generator().manual_seed(0))
        src, wf = feats(train, grid), feats(warp_images(train, p), grid)
        smap = sampling_map(p, s, s).float()  # warped pixel → source pixel (x, y)
        centre = ((torch.arange(grid) + 0.5) * s / grid - 0.5).round().long()
        src_g = (smap[:, centre][:, :, centre] + 0.5) * grid / s - 0.5  # (B, G, G, 2) source grid coords
        gy, gx = torch.meshgrid(torch.arange(grid).float(), torch.arange(grid).float(), indexing="ij")
        cells = torch.stack((gx, gy), -1).reshape(-1, 2)
        dist = torch.cdist(src_g.reshape(n_train, -1, 2), cells[None].expand(n_train, -1, -1))
        valid = ((src_g >= -0.5) & (src_g <= grid - 0.5)).all(-1).reshape(n_train, -1).float()
    trained = torch.nn.Conv2d(hc.dim, 32, 1, bias=False)
    random_proj = torch.nn.Conv2d(hc.dim, 32, 1, bias=False)
    random_proj.load_state_dict(trained.state_dict())
    opt = torch.optim.Adam(trained.parameters(), 3e-3)
    gen = torch.Generator().manual_seed(1)
    for _ in range(60):
        i = torch.randint(0, n_train, (8,), generator=gen)
        a = F.normalize(trained(src[i]), dim=1).flatten(2)
        w = F.normalize(trained(wf[i]), dim=1).flatten(2)
        prob = torch.einsum("bdv,bdu->bvu", w, a).mul(20).softmax(-1)
        loss = ((prob * dist[i]).sum(-1) * valid[i]).sum() / valid[i].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()

    with torch.no_grad():
        p = sample_tps(len(test), cfg, torch.Generator().manual_seed(123))
        warped = warp_images(test, p)
        true, ok = warp_landmarks(p, lm[n_train:].double(), s, s, return_valid=True)
        ok = ok & vis[n_train:]
        ref_h, tgt_h = feats(test, s), feats(warped, s)
        errors = {}
        for name, proj in (("trained", trained), ("random", random_proj)):
            rd, td = F.normalize(proj(ref_h), dim=1), F.normalize(proj(tgt_h), dim=1)
            e = [(transfer_landmarks(rd[j], lm[n_train + j], td[j : j + 1])[0] - true[j].float()).norm(dim=-1)[ok[j]]
                 for j in range(len(test))]
            errors[name] = float(torch.cat(e).mean())
    assert errors["trained"] < 0.9 * errors["random"], errors
