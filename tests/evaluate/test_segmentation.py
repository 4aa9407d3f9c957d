"""Figure-ground segmentation (appendix E) on tiny synthetic sets: metric, masks, head, fine-tuning, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from equinv.cli import main
from equinv.data.dataset import LandmarkDataset, final_view
from equinv.data.masks import load_masks, split_masks_option
from equinv.data.preprocess import Preprocess
from equinv.data.sample import LandmarkIndex, make_record
from equinv.errors import InputError
from equinv.evaluate.segmentation import SegmentationConfig, run_segmentation
from equinv.evaluate.segmentation_head import SegmentationHead, iou
from equinv.features.spec import FeatureSpec
from equinv.models.hypercolumn import frozen_trunk

TRAIN = "synthetic:96?size=64"
TEST = "synthetic:48?size=64&seed=1"


def _count_images(trunk) -> list[int]:
    seen = [0]
    trunk.conv1.register_forward_hook(lambda m, i, o: seen.__setitem__(0, seen[0] + i[0].shape[0]))
    return seen


def _b(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


def test_iou_hand_computed():
    a = _b([[1, 1, 0, 0]] * 2)  # 4 px
    b = _b([[0, 1, 1, 0]] * 2)  # 4 px, 2 shared
    empty = torch.zeros(2, 4, dtype=torch.bool)
    full = torch.ones(2, 4, dtype=torch.bool)
    pred = torch.stack([a, a, empty, empty, a, full])
    gt = torch.stack([a, b, empty, a, empty, b])
    got = iou(pred, gt).tolist()
    # identical; 2 / 6; both empty counts as perfect; empty prediction; false positives only; 4 / 8
    assert got == pytest.approx([1.0, 2 / 6, 1.0, 0.0, 0.0, 0.5])


def test_masks_crop_like_their_images(tmp_path):
    # the mask is the image's own red channel, so the cropped mask must equal the cropped red channel
    rng = np.random.default_rng(0)
    recs = []
    for i, (w, h) in enumerate([(80, 60), (50, 70)]):
        img = np.zeros((h, w, 3), np.uint8)
        x0, y0 = int(rng.integers(5, w // 2)), int(rng.integers(5, h // 2))
        img[y0 : y0 + 20, x0 : x0 + 15, 0] = 255  # a red block: the "object"
        img[:, :, 1] = rng.integers(0, 255, (h, w))  # other channels are not the mask
        (tmp_path / "imgs" / "sub").mkdir(parents=True, exist_ok=True)
        p = tmp_path / "imgs" / "sub" / f"im{i}.jpg.png"  # a suffix to replace, inside a subfolder
        Image.fromarray(img).save(p)
        (tmp_path / "masks" / "sub").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[:, :, 0]).save(tmp_path / "masks" / "sub" / f"im{i}.jpg.png")
        # a box crop partly outside the image: zero padding and a non-trivial scale
        pts = np.array([[x0, y0], [x0 + 14, y0 + 19]], np.float32)
        recs.append(make_record(p, pts, ("a", "b"), tmp_path / "list.txt", i + 1, crop="box",
                                box=(x0 - 10.0, y0 - 25.0, x0 + 30.0, y0 + 15.0)))
    ds = LandmarkDataset(LandmarkIndex("test", tmp_path / "imgs", ("a", "b"), recs), Preprocess(size=32, context=1.5))
    cov = load_masks(ds, tmp_path / "masks")
    view = final_view(ds.__getitems__([0, 1]), ds.pre)["image"][:, 0].numpy()
    assert cov.shape == (2, 32, 32)
    np.testing.assert_array_equal(cov, view)
    assert ((cov > 127).sum((1, 2)) > 20).all()  # the object is in view, not cropped away
    # the red block lands where its landmarks (its corners) are mapped
    for i in range(2):
        lm = ds[i]["landmarks"].numpy() - ds.pre.margin
        ys, xs = np.nonzero(cov[i] > 127)
        assert abs(xs.min() - lm[0, 0]) <= 1.5 and abs(ys.max() - lm[1, 1]) <= 1.5


def test_missing_wrong_size_and_unreadable_masks_name_the_file(tmp_path):
    img_dir, mask_dir = tmp_path / "imgs", tmp_path / "masks"
    img_dir.mkdir()
    mask_dir.mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(img_dir / f"im{i}.jpg")
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(mask_dir / "im0.png")
    spec = f"folder:{img_dir}?masks={mask_dir}"
    cfg = SegmentationConfig(train=spec, test=[spec], epochs=1, device="cpu", features=FeatureSpec(grid=12))
    with pytest.raises(InputError, match="mask not found") as e:
        run_segmentation(cfg)
    assert str(mask_dir / "im1.png") in str(e.value)
    Image.fromarray(np.zeros((21, 30), np.uint8)).save(mask_dir / "im1.png")
    with pytest.raises(InputError, match="mask is 30x21 but its image") as e:
        run_segmentation(cfg)
    assert "im1.png" in str(e.value)
    (mask_dir / "im1.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot decode mask") as e:
        run_segmentation(cfg)
    assert "im1.png" in str(e.value)
    assert split_masks_option(spec) == (f"folder:{img_dir}", str(mask_dir))


def test_head_beats_blind_baselines_and_features_are_computed_once(tmp_path):
    trunk = frozen_trunk("resnet18", None, seed=0)
    seen = _count_images(trunk)
    cfg = SegmentationConfig(train=TRAIN, test=[TEST], epochs=60, lr=1e-2, features=FeatureSpec(grid=24), device="cpu",
                             n_train=[None, 10], repeats=2, tile_to=10)
    losses = []
    res = run_segmentation(cfg, tmp_path, trunk=trunk, log=lambda e: losses.append(e["loss"]))
    # one pass per image (+ a 1-image shape probe per dataset), never again during the 3 trainings
    assert res["backbone_images"] == 96 + 48 and seen[0] == 96 + 48 + 2
    assert len(losses) == 3 * 60 and losses[59] < 0.5 * losses[0]
    full = res["runs"][0]["tests"][TEST]["iou"]
    base = res["baselines"][TEST]
    # measured: all-foreground 0.574, the mean training mask (a centred blob) 0.764, the head 0.815
    assert base["all_foreground"] == pytest.approx(0.574, abs=0.01)
    assert base["mean_mask"] == pytest.approx(0.764, abs=0.01)
    assert full > base["mean_mask"] + 0.03 and full > base["all_foreground"] + 0.2
    # the head is one 1x1 convolution of the raw hypercolumn: its folded form predicts the same logits
    maps = [torch.randn(2, c, s, s) for c, s in zip((512, 256, 128, 64), (3, 6, 12, 24), strict=True)]
    head = SegmentationHead((512, 256, 128, 64), [torch.randn(c) for c in (512, 256, 128, 64)],
                            [torch.rand(c) + 0.5 for c in (512, 256, 128, 64)])
    torch.nn.init.normal_(head.conv.conv.weight)
    torch.testing.assert_close(head.as_conv()(maps, 24), head(maps, 24), rtol=1e-4, atol=1e-3)
    # limited annotations: two different seeded subsets of 10
    small = res["runs"][1]
    assert small["n_train"] == 10 and small["repeats"] == 2
    rows = [rep["train_rows"] for rep in small["per_repeat"]]
    assert rows[0] != rows[1] and len(rows[0]) == 10
    assert 0.5 < small["tests"][TEST]["iou"] < 1 and small["tests"][TEST]["iou_std"] > 0
    pred = np.load(tmp_path / "segment_predictions.npz")
    assert set(pred.files) == {"mask_gt_0", "mask_pred_0_0", "mask_pred_1_0", "images_0"}
    # the report draws the test images the evaluation kept (it never re-reads the dataset)
    assert pred["images_0"].shape == (16, 96, 96, 3) and pred["images_0"].dtype == np.uint8
    assert pred["mask_pred_1_0"].shape == (48, 96, 96) and pred["mask_gt_0"].dtype == np.uint8
    assert set(np.unique(pred["mask_pred_0_0"])) <= {0, 1}
    iou_again = iou(torch.from_numpy(pred["mask_pred_0_0"]), torch.from_numpy(pred["mask_gt_0"])).mean()
    assert float(iou_again) == pytest.approx(full)


def test_finetune_updates_the_trunk_and_recomputes_features():
    trunk = frozen_trunk("resnet18", None, seed=0)
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    seen = _count_images(trunk)
    cfg = SegmentationConfig(train="synthetic:16?size=64", test=["synthetic:8?size=64&seed=1"], epochs=3,
                             features=FeatureSpec(grid=24), device="cpu", finetune=True, batch_size=8)
    res = run_segmentation(cfg, trunk=trunk)
    rep = res["runs"][0]["per_repeat"][0]
    assert rep["trunk_weight_change"] > 1e-4  # the trained copy moved away from the start
    # the caller's trunk is untouched: a copy is trained (the copy carries the counting hook along)
    assert all(torch.equal(before[k], v) for k, v in trunk.state_dict().items())
    # the stats pass, 3 epochs of 16 images, then the 8 test images: features recomputed at every step
    assert res["backbone_images"] == seen[0] == 16 + 3 * 16 + 8
    assert res["mode"] == "finetune" and 0 <= res["iou"] <= 1


def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "seg"
    code = main(["eval", "segment", "--train", "synthetic:16?size=64", "--test", "synthetic:8?size=64&seed=1",
                 "--epochs", "2", "--grid", "12", "--n-train", "4,all", "--repeats", "2", "--device", "cpu",
                 "--quiet", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "n_train      4 x2 frozen  synthetic:8?size=64&seed=1: IoU" in text and "segment.json" in text
    res = json.loads((out / "segment.json").read_text())
    for key in ("iou", "std", "n_train", "repeats", "runs", "config", "datasets", "seed", "versions"):
        assert key in res
    assert 0 <= res["iou"] <= 1 and res["n_train"] == 4 and res["repeats"] == 2
    run = res["runs"][1]
    assert run["n_train"] == 16 and run["repeats"] == 1
    assert set(run["tests"]["synthetic:8?size=64&seed=1"]) == {"iou", "iou_std", "n_images"}
    assert len(res["runs"][0]["per_repeat"]) == 2
    assert (out / "segment_predictions.npz").is_file()


def test_cli_missing_mask_is_one_line_error(tmp_path, capsys):
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(img_dir / "bird.jpg")
    (tmp_path / "masks").mkdir()
    code = main(["eval", "segment", "--train", f"folder:{img_dir}", "--test", f"folder:{img_dir}",
                 "--masks", str(tmp_path / "masks"), "--epochs", "1", "--quiet", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and str(tmp_path / "masks" / "bird.png") in err
