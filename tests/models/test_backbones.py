"""Backbones: sizes, taps, torchvision compatibility, weight files."""

from __future__ import annotations

import pytest
import torch
import torchvision
from safetensors.torch import load_file

from equinv.errors import InputError
from equinv.models.backbones import ARCHS, Encoder, build_backbone, load_backbone, save_backbone
from equinv.models.heads import LinearHead, MLPHead


@pytest.mark.parametrize(
    "arch, millions", [("resnet18", 11.24), ("resnet34", 21.35), ("resnet50", 23.77), ("resnet50_half", 6.03)]
)
def test_parameter_count_with_128d_head(arch, millions):
    with torch.device("meta"):
        enc = Encoder(arch, dim=128, head="linear")
    n = sum(p.numel() for p in enc.parameters())
    assert round(n / 1e6, 2) == millions  # the paper's figures (P:376-383) to the stated 0.01M


@pytest.mark.parametrize(
    "arch, channels",
    [
        ("resnet18", (64, 64, 128, 256, 512)),
        ("resnet34", (64, 64, 128, 256, 512)),
        ("resnet50", (64, 256, 512, 1024, 2048)),
        ("resnet50_half", (64, 128, 256, 512, 1024)),  # reference stem stays 64 (see backbones.py)
    ],
)
def test_trunk_channels(arch, channels):
    with torch.device("meta"):
        enc = Encoder(arch)
        taps = enc.taps(torch.empty(2, 3, 96, 96))
    assert enc.trunk_channels == channels
    assert [t.shape[1] for t in taps] == list(channels)
    assert [t.shape[-1] for t in taps] == [24, 24, 12, 6, 3]


def test_same_keys_as_torchvision():
    for arch in ("resnet18", "resnet34", "resnet50"):
        with torch.device("meta"):
            ours = build_backbone(arch).state_dict().keys()
            tv = getattr(torchvision.models, arch)().state_dict().keys()
        assert set(tv) - set(ours) == {"fc.weight", "fc.bias"} and set(ours) <= set(tv)


def test_init_is_torchvision_default():
    torch.manual_seed(0)
    net = build_backbone("resnet50_half")
    w = net.layer2[0].conv2.weight  # 3x3, C_out = 64
    assert w.std().item() == pytest.approx((2 / (9 * 64)) ** 0.5, rel=0.05)
    assert torch.all(net.layer3[1].bn2.weight == 1) and torch.all(net.layer3[1].bn2.bias == 0)


@pytest.mark.parametrize("head, cls", [("linear", LinearHead), ("mlp", MLPHead)])
def test_output_is_l2_normalised(head, cls):
    torch.manual_seed(0)
    enc = Encoder("resnet18", dim=32, head=head)
    assert isinstance(enc.head, cls)
    z = enc(torch.randn(4, 3, 32, 32))
    assert z.shape == (4, 32)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(4))


def _eval_pair(a, b, x):
    a.eval(), b.eval()
    with torch.no_grad():
        return a(x), b(x)


def test_torchvision_state_dict_file_loads(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.resnet18()
    for m in tv.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
    path = tmp_path / "resnet18-random.pth"
    torch.save(tv.state_dict(), path)
    enc = Encoder("resnet18")
    report = load_backbone(enc, path)
    assert not report.missing and not report.unexpected
    assert set(report.ignored) == {"fc.weight", "fc.bias"}
    tv.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    ours, theirs = _eval_pair(enc.backbone, tv, x)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    with torch.no_grad():
        deepest = enc.taps(x)[-1]
        ref = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))
    torch.testing.assert_close(deepest, ref, rtol=0, atol=0)


def test_safetensors_round_trip(tmp_path):
    torch.manual_seed(0)
    src = Encoder("resnet18")
    src.train()
    src(torch.randn(4, 3, 32, 32))  # move BN running statistics away from their initial values
    path = save_backbone(src, tmp_path / "backbone.safetensors")
    tensors = load_file(str(path))
    assert "conv1.weight" in tensors and "layer1.0.bn1.running_mean" in tensors
    assert not any(k.startswith(("fc.", "backbone.", "head.")) for k in tensors)

    dst = Encoder("resnet18")
    load_backbone(dst, path)
    a, b = _eval_pair(src.backbone, dst.backbone, torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(a, b, rtol=0, atol=0)

    tv = torchvision.models.resnet18()
    result = tv.load_state_dict(tensors, strict=False)
    assert set(result.missing_keys) == {"fc.weight", "fc.bias"} and not result.unexpected_keys


@pytest.mark.parametrize(
    "prefix", ["module.", "model.", "encoder.module.", "module.encoder_q.", "model/encoder_q.backbone."]
)
def test_prefixed_state_dicts_load(prefix):
    torch.manual_seed(0)
    src = Encoder("resnet18")
    state = {prefix + k: v for k, v in src.backbone.state_dict().items()}
    if "encoder_q" in prefix:  # a MoCo checkpoint also carries the key encoder and the queue
        state.update(
            {
                prefix.replace("encoder_q", "encoder_k") + k: torch.zeros_like(v)
                for k, v in src.backbone.state_dict().items()
            }
        )
        state["queue"] = torch.zeros(8, 128)
    dst = Encoder("resnet18")
    report = load_backbone(dst, state)
    assert len(report.loaded) == len(src.backbone.state_dict())
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(dst.backbone.state_dict()[k], v)


def test_moco_checkpoint_loads_query_encoder():
    from equinv.models.moco import MoCo

    torch.manual_seed(0)
    moco = MoCo("resnet18", queue_size=16)
    with torch.no_grad():
        for p in moco.encoder_q.parameters():
            p.add_(1.0)  # query differs from key
    dst = Encoder("resnet18")
    load_backbone(dst, {"module." + k: v for k, v in moco.state_dict().items()})
    assert torch.equal(dst.backbone.conv1.weight, moco.encoder_q.backbone.conv1.weight)


@pytest.mark.parametrize("file_arch, model_arch", [("resnet34", "resnet18"), ("resnet18", "resnet50_half")])
def test_wrong_architecture_names_the_file(tmp_path, file_arch, model_arch):
    path = save_backbone(build_backbone(file_arch), tmp_path / f"{file_arch}.safetensors")
    with pytest.raises(InputError) as err:
        load_backbone(Encoder(model_arch), path)
    msg = str(err.value)
    assert str(path) in msg and model_arch in msg and repr(file_arch) in msg


def test_unreadable_and_missing_files(tmp_path):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="broken.pth"):
        load_backbone(Encoder("resnet18"), bad)
    with pytest.raises(InputError, match="nowhere.safetensors"):
        load_backbone(Encoder("resnet18"), tmp_path / "nowhere.safetensors")


def test_non_strict_reports_missing():
    src = build_backbone("resnet18").state_dict()
    partial = {k: v for k, v in src.items() if not k.startswith("layer4.")}
    report = load_backbone(Encoder("resnet18"), partial, strict=False)
    assert report.missing and all(k.startswith("layer4.") for k in report.missing)
    assert "missing" in str(report)


def test_unknown_names():
    with pytest.raises(ValueError, match="resnet50_half"):
        build_backbone("resnet51")
    with pytest.raises(ValueError, match="mlp"):
        Encoder("resnet18", head="transformer")
    assert set(ARCHS) >= {"resnet18", "resnet34", "resnet50", "resnet50_half"}
