"""Feature sources (single layers, projector, NMF, DVE) and fine-tuning in the regression evaluation."""

from dataclasses import asdict

import numpy as np
import pytest
import torch

from equinv.checkpoint import save_checkpoint
from equinv.data.preprocess import Preprocess
from equinv.errors import InputError, SkipLog
from equinv.evaluate.parts import fit_parts
from equinv.evaluate.regression import RegressionConfig, load_labelled, run_regression
from equinv.evaluate.regressor_fit import finetune_regressor
from equinv.features.cache import label_set
from equinv.features.sources import DVESource, NMFSource, ProjectedSource, build_source
from equinv.features.spec import FeatureSpec, parse_taps
from equinv.models.dve import build_dve, is_dve_weights, save_dve
from equinv.models.hypercolumn import frozen_trunk
from equinv.models.projector import Projector
from equinv.train.projector import ProjectConfig

TRAIN = "synthetic:12?size=64"
TEST = "synthetic:4?size=64&seed=1"


def test_parse_taps_aliases_and_errors():
    assert parse_taps("conv4") == ("layer3",)
    assert parse_taps("layer4, conv4_x,pool") == ("layer4", "layer3", "maxpool")
    assert parse_taps(None) is None
    with pytest.raises(InputError, match="unknown tap"):
        parse_taps("layer9")
    with pytest.raises(InputError, match="repeated"):
        parse_taps("conv4,layer3")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sources_from_files(tmp_path):
    x = torch.randn(2, 3, 96, 96)
    # DVE: the network's own file, recognised from its metadata; inputs resized to its 70-px training side
    dve_file = save_dve(build_dve("smallnet", 16), tmp_path / "dve" / "descriptor.safetensors", "smallnet",
                        input_size=70)
    assert is_dve_weights(tmp_path / "dve") and is_dve_weights(dve_file) and not is_dve_weights("random")
    src = build_source(FeatureSpec(backbone=str(tmp_path / "dve")))
    assert isinstance(src, DVESource) and src.channels == (16,)
    assert src.maps(x)[0].shape == (2, 16, 35, 35)
    # projector checkpoint as `equinv project` writes it
    proj = Projector((512, 256, 128, 64), dim=8)
    meta = {"config": asdict(ProjectConfig(dim=8)), "channels": [512, 256, 128, 64]}
    save_checkpoint(tmp_path / "proj" / "checkpoints" / "best.safetensors", proj.state_dict(), None, meta=meta)
    src = build_source(FeatureSpec("projected", projector=str(tmp_path / "proj"), grid=24))
    assert isinstance(src, ProjectedSource) and src.maps(x)[0].shape == (2, 8, 24, 24)
    with pytest.raises(InputError, match="channels"):
        build_source(FeatureSpec("projected", projector=str(tmp_path / "proj"), layers=3))
    # NMF parts file
    parts = fit_parts(torch.rand(200, 960), "nmf", 5, seed=0)
    parts.save(tmp_path / "nmf.safetensors")
    src = build_source(FeatureSpec("nmf", parts=str(tmp_path / "nmf.safetensors"), grid=12))
    assert isinstance(src, NMFSource)
    m = src.maps(x)[0]
    assert m.shape == (2, 5, 12, 12) and bool((m >= 0).all())
    with pytest.raises(InputError, match="--parts"):
        build_source(FeatureSpec("nmf"))
    with pytest.raises(InputError, match="not found"):
        build_source(FeatureSpec(backbone=str(tmp_path / "missing.safetensors")))


def test_single_layer_regresses_at_native_resolution(tmp_path):
    cfg = RegressionConfig(train=TRAIN, test=[TEST], features=FeatureSpec(taps="conv4"), epochs=2, n_heatmaps=4,
                           device="cpu")
    res = run_regression(cfg, tmp_path, trunk=frozen_trunk("resnet18", None, seed=0))
    # ResNet18 conv4_x of a 96-px input is 6x6: the reference regresses single layers there (not at 48)
    assert res["taps"] == ["layer3"] and res["channels"] == [256] and res["grid"] == 6
    assert 0 < res["iod_error_percent"] < 200


def test_regression_on_a_dve_network(tmp_path):
    save_dve(build_dve("smallnet", 16), tmp_path / "dve.safetensors", "smallnet", input_size=70)
    cfg = RegressionConfig(train=TRAIN, test=[TEST], features=FeatureSpec(backbone=str(tmp_path / "dve.safetensors")),
                           epochs=2, n_heatmaps=4, device="cpu")
    res = run_regression(cfg, tmp_path / "out")
    assert res["source"] == "dve" and res["channels"] == [16] and res["grid"] == 35
    assert res["config"]["features"]["source"] == "dve" and res["config"]["dve_arch"] == "smallnet"
    assert res["iod_error_percent"] > 0


def test_finetuning_updates_the_trunk_and_restores_frozen_state():
    source = build_source(FeatureSpec(layers=2), trunk=frozen_trunk("resnet18", None, seed=0))
    before = {k: v.clone() for k, v in source.state_dict().items()}
    ds, _ = load_labelled(TRAIN, Preprocess(size=96), SkipLog())
    labels = label_set(ds, TRAIN)
    assert labels.landmarks.shape == (12, 10, 2) and bool((labels.landmarks.abs() <= 1.5).all())
    vds, _ = load_labelled(TEST, Preprocess(size=96), SkipLog())
    reg, info = finetune_regressor(source, ds, [0, 3, 5, 7], labels, epochs=2, lr=1e-2, wd=0.0, batch_size=4,
                                   tps=True, val=(vds, label_set(vds, TEST)), grid=12, n_heatmaps=4)
    after = source.state_dict()
    changed = [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])]
    assert any("layer4" in k and "weight" in k for k in changed)
    assert not any(p.requires_grad for p in source.parameters()) and not source.training
    # 2 epochs x 4 images + 2 validation passes x 4 images went through the backbone
    assert info["backbone_images"] == 2 * 4 + 2 * 4 and info["selection"] == "best val"


def test_run_regression_finetune_end_to_end(tmp_path):
    cfg = RegressionConfig(train=TRAIN, test=[TEST], features=FeatureSpec(layers=2), epochs=1, n_heatmaps=4,
                           finetune=True, n_train=[4], device="cpu")
    res = run_regression(cfg, tmp_path, trunk=frozen_trunk("resnet18", None, seed=0))
    assert res["config"]["finetune"] and res["n_train"] == 4
    # tile: 12 images // 4 = 3 passes over the 4 images, then the 4 test images
    assert res["backbone_images"] == 12 + 4


def test_projected_source_regresses_with_the_input_scale_and_collapses_without(tmp_path):
    """Spatial-softmax projections are ~1/(H·W): without ``--input-scale std`` every prediction is the same."""
    from equinv.evaluate.regressor_fit import resolve_input_scale

    assert resolve_input_scale("auto", "projected") == resolve_input_scale("auto", "nmf") == "std"
    assert resolve_input_scale("auto", "hypercolumn") == resolve_input_scale("auto", "dve") == "none"
    assert resolve_input_scale("none", "projected") == "none"
    with pytest.raises(InputError, match="input-scale"):
        resolve_input_scale("bn", "projected")
    torch.manual_seed(0)
    proj = Projector((512, 256, 128, 64), dim=8)
    meta = {"config": asdict(ProjectConfig(dim=8)), "channels": [512, 256, 128, 64]}
    save_checkpoint(tmp_path / "proj" / "checkpoints" / "best.safetensors", proj.state_dict(), None, meta=meta)
    spread = {}
    for mode in ("auto", "none"):
        spec = FeatureSpec("projected", projector=str(tmp_path / "proj"), grid=12, readout="output")
        cfg = RegressionConfig(train=TRAIN, test=[TRAIN], features=spec, epochs=3, lr=3e-2, softargmax_mul=3,
                               n_heatmaps=4, device="cpu", input_scale=mode)
        res = run_regression(cfg, tmp_path / mode, trunk=frozen_trunk("resnet18", None, seed=0))
        pred = np.load(tmp_path / mode / "predictions.npz")["pred_0_0"]
        spread[res["input_scale"]] = float(pred.std(0).max())
    # measured: 0.016 without, 0.40 with (normalised coordinates; the landmarks spread ~0.1)
    assert 10 * spread["none"] < spread["std"]


def test_projected_linear_readout_is_the_log_of_the_softmax_output_up_to_a_constant(tmp_path):
    torch.manual_seed(0)
    proj = Projector((512, 256, 128, 64), dim=8)
    meta = {"config": asdict(ProjectConfig(dim=8)), "channels": [512, 256, 128, 64]}
    save_checkpoint(tmp_path / "proj" / "checkpoints" / "best.safetensors", proj.state_dict(), None, meta=meta)
    x = torch.randn(2, 3, 96, 96)
    out = build_source(FeatureSpec("projected", projector=str(tmp_path / "proj"), grid=12)).maps(x)[0]
    lin = build_source(FeatureSpec("projected", projector=str(tmp_path / "proj"), grid=12, readout="linear")).maps(x)[0]
    assert out.shape == lin.shape == (2, 8, 12, 12)
    torch.testing.assert_close(out.sum((2, 3)), torch.ones(2, 8))
    z = proj.softargmax_mul * lin
    torch.testing.assert_close(out.log(), z - z.flatten(2).logsumexp(-1)[..., None, None], rtol=1e-4, atol=1e-4)
    with pytest.raises(InputError, match="readout"):
        build_source(FeatureSpec("projected", projector=str(tmp_path / "proj"), readout="softmax"))


def test_finetune_input_scale_matches_the_frozen_scale_and_is_used(tmp_path):
    """Fine-tuning computes ``--input-scale std`` from live maps; it must equal the frozen path's scale."""
    from equinv.evaluate.regressor_fit import feature_std, live_feature_std
    from equinv.features.cache import extract_features
    from equinv.features.stats import stats_for_kind
    from equinv.models.regressor import scale_from_std

    torch.manual_seed(0)
    proj = Projector((512, 256, 128, 64), dim=8)
    meta = {"config": asdict(ProjectConfig(dim=8)), "channels": [512, 256, 128, 64]}
    save_checkpoint(tmp_path / "proj" / "checkpoints" / "best.safetensors", proj.state_dict(), None, meta=meta)
    spec = FeatureSpec("projected", projector=str(tmp_path / "proj"), grid=12, readout="output")
    source = build_source(spec, trunk=frozen_trunk("resnet18", None, seed=0))
    ds, kind = load_labelled(TRAIN, Preprocess(size=96), SkipLog())
    eyes = ds.eyes
    stats = source.stats or stats_for_kind(kind)
    live = scale_from_std(live_feature_std(source, ds, None, stats, "cpu"))
    frozen = scale_from_std(feature_std(extract_features(ds, source, stats, "cpu", spec=TRAIN, eyes=eyes),
                                        source.channels))
    assert live.shape == frozen.shape == (8,)
    # the cached maps are fp16: the two agree to its precision, and the scale is far from 1 (softmax maps)
    assert torch.allclose(live, frozen, rtol=2e-2)
    assert float(live.min()) > 10
    cfg = RegressionConfig(train=TRAIN, test=[TEST], features=spec, epochs=1, n_heatmaps=4, finetune=True,
                           n_train=[4], device="cpu", input_scale="auto")
    res = run_regression(cfg, tmp_path / "ft", trunk=frozen_trunk("resnet18", None, seed=0))
    assert res["input_scale"] == "std" and res["config"]["finetune"]
    assert np.isfinite(res["iod_error_percent"])


def test_a_dve_mode_linear_projector_is_rebuilt_from_its_recorded_config(tmp_path):
    """A saved landmark model rebuilds its source from ``source_config``: the projector's kind travels."""
    from equinv.features.sources import source_config, source_skeleton

    torch.manual_seed(0)
    proj = Projector((512, 256, 128, 64), dim=8, mode="linear")
    meta = {"config": asdict(ProjectConfig(dim=8, mode="dve", projector="linear")),
            "channels": [512, 256, 128, 64], "projector": "linear"}
    save_checkpoint(tmp_path / "proj" / "checkpoints" / "best.safetensors", proj.state_dict(), None, meta=meta)
    spec = FeatureSpec("projected", projector=str(tmp_path / "proj"), grid=12)
    src = build_source(spec, trunk=frozen_trunk("resnet18", None, seed=0))
    assert src.projector.mode == "linear"
    skel = source_skeleton(spec, source_config(src))
    skel.load_state_dict(src.state_dict())
    x = torch.randn(1, 3, 96, 96)
    torch.testing.assert_close(skel.maps(x)[0], src.maps(x)[0])
