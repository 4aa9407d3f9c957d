"""Which per-point confidence goes with the error? Flip consistency against the heat-maps' own spread.

    python experiments/confidence.py

Fits a landmark model as ``tests/landmarks/test_landmarks.py`` does (48 synthetic faces at 64 px, random
ResNet18, 24² grid, 8 heat-maps per landmark, 120 steps) and predicts 64 held-out faces. For every point it
prints, for two confidences, Spearman's ρ between confidence and error and the ratio of the mean error of the
least confident quarter of points to that of the most confident quarter:

* flip consistency (``LandmarkModel.predict_views``, what ``equinv predict`` writes);
* the spread of the point implied by its heat-maps' softmax distributions through the regressor's linear map.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from equinv.data.spec import read_index
from equinv.features.spec import FeatureSpec
from equinv.features.stats import prepare_input
from equinv.landmarks.fit import FitConfig, fit_model
from equinv.landmarks.inputs import arrays_of, frame_arrays


def _rank_corr(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


@torch.no_grad()
def _spread(model, views: torch.Tensor) -> np.ndarray:
    """``sqrt(Σ_i w_i² Var p_i)`` per point: each heat-map's softmax variance through the linear map."""
    reg, grid = model.regressor, int(model.meta["regressor"]["grid"])
    heat = reg.heatmaps(reg._scaled(model.source.maps(prepare_input(views, None, "face", "cpu"))), grid)
    b, n, h, w = heat.shape
    p = F.softmax(reg.softargmax_mul * heat.reshape(b, n, h * w), -1).reshape(b, n, h, w)
    xs, ys = torch.linspace(-1, 1, w), torch.linspace(-1, 1, h)
    px, py = p.sum(2), p.sum(3)
    var = torch.stack([(px * xs**2).sum(-1) - (px * xs).sum(-1) ** 2,
                       (py * ys**2).sum(-1) - (py * ys).sum(-1) ** 2], -1)
    k, ni = reg.n_landmarks, reg.n_heatmaps
    w2 = reg.regressor.weight.reshape(k, 2, ni, 2).square()
    return torch.einsum("koic,bkic->bko", w2, var.clamp_min(0).reshape(b, k, ni, 2)).sum(-1).sqrt().numpy()


def main() -> None:
    cfg = FitConfig(train="synthetic:48?size=64", val="synthetic:16?size=64&seed=2", features=FeatureSpec(grid=24),
                    steps=120, n_heatmaps=8, device="cpu", head="regressor")
    model, _ = fit_model(cfg)
    recs = read_index("synthetic:64?size=64&seed=5").records
    truth = np.stack([r.landmarks for r in recs])
    views, frames = frame_arrays(arrays_of([r.path for r in recs]), model)
    pts, conf = model.predict_views(views)
    pred = np.stack([f.to_source(q) for f, q in zip(frames, pts.numpy(), strict=True)])
    err = np.linalg.norm(pred - truth, axis=-1).ravel()
    print(f"{len(recs)} held-out faces, {err.size} points, mean error {err.mean():.2f} px")
    print("| confidence | Spearman ρ(confidence, error) | error, least / most confident quarter |")
    print("|---|---:|---:|")
    for name, c in (("flip consistency", conf.numpy().ravel()), ("heat-map spread", -_spread(model, views).ravel())):
        order, q = np.argsort(c), err.size // 4
        print(f"| {name} | {_rank_corr(c, err):+.3f} | {err[order[:q]].mean() / err[order[-q:]].mean():.2f} |")


if __name__ == "__main__":
    main()
