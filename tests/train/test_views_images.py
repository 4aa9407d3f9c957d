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
