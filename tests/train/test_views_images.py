import numpy as np
import torch

from equinv.data.dataset import LandmarkDataset
from equinv.data.images import ImageSet
from equinv.data.preprocess import Preprocess
from equinv.data.spec import read_index
from equinv.train.views import ViewMaker, auto_recipe


class _Cfg:
    data = ["synthetic:8?size=64"]
    recipe, size, tps, flip, grayscale = "auto", 32, None, False, 0.0


def test_auto_recipe_by_kind():
    assert auto_recipe(["celeba:x", "mtfl:y"]) == "face"
    assert auto_recipe(["celeba:x", "folder:y"]) == "bird"
    assert auto_recipe(["cub:x"]) == "bird"


def test_view_maker_face_context_and_shapes():
    vm = ViewMaker.from_config(_Cfg)
    assert vm.view.canvas == 45 and vm.view.final == 32
    ds = LandmarkDataset(read_index(_Cfg.data[0]), Preprocess(size=32, context=vm.context))
    ds.prepare(progress=False)
    q, k = vm(ds.__getitems__(list(range(8)))["image"], torch.Generator().manual_seed(0))
    assert q.shape == k.shape == (8, 3, 32, 32) and not torch.equal(q, k)


def test_image_set_concatenates_and_subsets():
    pre = Preprocess(size=32)
    a = LandmarkDataset(read_index("synthetic:6?size=64&seed=1"), pre)
    b = LandmarkDataset(read_index("synthetic:4?size=64&seed=2"), pre)
    s = ImageSet([a, b])
    assert len(s) == 10
    batch = s.__getitems__([9, 0, 6])
    assert torch.equal(batch["image"][0], b[3]["image"]) and torch.equal(batch["image"][1], a[0]["image"])
    assert torch.equal(batch["image"][2], b[0]["image"])
    sub = ImageSet([a, b], max_images=5, seed=0)
    assert len(sub) == 5 and np.all(np.diff(sub.order) > 0)


def test_tracked_views_are_the_same_draws_and_the_points_land_where_the_pixels_went():
    from equinv.augment.recipes import face_moco
    from equinv.train.views import ViewMaker

    # geometry only (RRC, flip; TPS too), colour left alone: a view's pixel shows the input's value there
    view = face_moco(canvas=64, final=48, jpeg=False, jitter=(0.0, 0.0, 0.0), pca_std=0.0, mean=(0.0, 0.0, 0.0),
                     std=(1.0, 1.0, 1.0), hflip_p=0.5, tps="paper")
    vm = ViewMaker(view)
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    ramp = torch.stack((xs / 63, ys / 63, torch.zeros_like(xs)))[None].expand(6, -1, -1, -1).contiguous()
    q, k = vm(ramp, torch.Generator().manual_seed(4))
    tq, tk, (in_q, in_k, valid) = vm.tracked(ramp, torch.Generator().manual_seed(4), side=8)
    assert torch.equal(q, tq) and torch.equal(k, tk)
    assert in_q.shape == in_k.shape == (6, 64, 2) and valid.shape == (6, 64) and 0 < valid.sum() < valid.numel()
    src = torch.stack(torch.meshgrid((torch.arange(8.0) + 0.5) * 8 - 0.5, (torch.arange(8.0) + 0.5) * 8 - 0.5,
                                     indexing="xy"), -1).reshape(-1, 2) / 63  # (x, y) of the grid, as ramp values
    for img, pts in ((tq, in_q), (tk, in_k)):
        got = torch.nn.functional.grid_sample(img[:, :2], (2 * pts[:, :, None] + 1) / 48 - 1, align_corners=False,
                                              padding_mode="border")  # a valid point may be ½ px off the centres
        err = (got[..., 0].transpose(1, 2) - src[None]).abs().amax(-1)[valid]
        assert err.max() < 0.02  # a pixel is 1/63; the views are resampled bilinearly once
