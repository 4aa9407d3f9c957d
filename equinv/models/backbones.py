"""ResNet backbones by name, the MoCo :class:`Encoder`, and loading/saving trunk weights.

Architectures (protocol §1-2; parameter counts include a 128-d linear head, as in the paper P:376-383):

=================  ========================  ==========================  =======
name               blocks                    taps (maxpool, layer1..4)   params
=================  ========================  ==========================  =======
``resnet18``       BasicBlock [2, 2, 2, 2]   64, 64, 128, 256, 512       11.24M
``resnet34``       BasicBlock [3, 4, 6, 3]   64, 64, 128, 256, 512       21.35M
``resnet50``       Bottleneck [3, 4, 6, 3]   64, 256, 512, 1024, 2048    23.77M
``resnet50_half``  same, stage base 32       64, 128, 256, 512, 1024     6.03M
=================  ========================  ==========================  =======

All are torchvision's ``ResNet`` with its own blocks and ``_make_layer``; :class:`WidthResNet` only
changes the stage base width (64 in torchvision, 32 for ResNet50-half) and the stem width.

ResNet50-half follows the reference ``resnet50(width=0.5)`` (CL/models/resnet.py:108-130): its
``width`` scales the four stages only, the 7x7 stem keeps **64** channels. That is the network whose
size the paper reports: 6.0337M parameters (6.03M, P:378); halving the stem as well would give
6.0238M (6.02M). CL2's ``desc_dim[1] = 32`` for this model is a bug in the reference (its tap x4 has
64 channels); the hypercolumn dims it uses (layers 2-5: 128+256+512+1024 = 1920) are unaffected.

Initialisation is torchvision's: conv weights kaiming-normal with ``fan_out`` (= the reference's
N(0, 2/(k²·C_out))), BN γ=1, β=0.

Weights are exchanged as plain state dicts in **torchvision key names** (``conv1.weight``,
``layer1.0.bn1.running_mean``, ...), without the ``fc`` classifier, so a file written by
:func:`save_backbone` loads into ``torchvision.models.resnet50()`` with ``strict=False``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from equinv.errors import InputError
from equinv.models.heads import build_head
from equinv.safefile import write_safetensors

TAP_NAMES = ("maxpool", "layer1", "layer2", "layer3", "layer4")
"""The five feature taps, shallow to deep: x4 (post-maxpool), x5 = conv2_x, ..., x8 = conv5_x."""


@dataclass(frozen=True)
class ArchSpec:
    """A ResNet variant: block type, blocks per stage, and base width (64 = torchvision)."""

    block: type[BasicBlock] | type[Bottleneck]
    layers: tuple[int, int, int, int]
    base: int = 64
    stem: int = 64


ARCHS: dict[str, ArchSpec] = {
    "resnet18": ArchSpec(BasicBlock, (2, 2, 2, 2)),
    "resnet34": ArchSpec(BasicBlock, (3, 4, 6, 3)),
    "resnet50": ArchSpec(Bottleneck, (3, 4, 6, 3)),
    "resnet50_half": ArchSpec(Bottleneck, (3, 4, 6, 3), base=32),
}


class WidthResNet(ResNet):
    """torchvision's ``ResNet`` with stage base width ``base`` and ``stem`` channels after the 7x7 conv.

    With ``base = stem = 64`` this is exactly ``torchvision.models.resnet*``. Stage ``i`` (1..4) has
    ``base·2^(i-1)`` planes (× ``block.expansion`` at its output). The
    classifier ``fc`` is replaced by ``nn.Identity``, so ``forward`` returns the globally average-pooled
    trunk features ``(B, out_channels)``.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, ...],
        base: int = 64,
        stem: int = 64,
    ):
        super().__init__(block, list(layers))
        if base != 64 or stem != 64:  # rebuild at the new widths with torchvision's own _make_layer
            self.inplanes = stem
            self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = self._norm_layer(stem)
            self.layer1 = self._make_layer(block, base, layers[0])
            self.layer2 = self._make_layer(block, base * 2, layers[1], stride=2)
            self.layer3 = self._make_layer(block, base * 4, layers[2], stride=2)
            self.layer4 = self._make_layer(block, base * 8, layers[3], stride=2)
            for m in self.modules():  # torchvision's initialisation
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)
        self.fc = nn.Identity()
        e = block.expansion
        self.trunk_channels: tuple[int, ...] = (stem, base * e, base * 2 * e, base * 4 * e, base * 8 * e)
        self.out_channels: int = self.trunk_channels[-1]

    def taps(self, x: Tensor) -> list[Tensor]:
        """The five taps ``[x4, x5, x6, x7, x8]`` (post-maxpool, layer1..layer4) of ``x`` (B, 3, H, W).

        At H = W = 96 their spatial sizes are 24, 24, 12, 6, 3; channels are ``trunk_channels``.
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = [x]
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            out.append(x)
        return out


def build_backbone(arch: str) -> WidthResNet:
    """The trunk named ``arch`` (a key of :data:`ARCHS`), freshly initialised, with ``fc = Identity``."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHS)}")
    spec = ARCHS[arch]
    net = WidthResNet(spec.block, spec.layers, spec.base, spec.stem)
    net.arch = arch
    return net


class Encoder(nn.Module):
    """MoCo encoder: ResNet trunk → global average pool → head → L2 normalisation.

    ``forward(x)``: ``(B, 3, H, W)`` float images → ``(B, dim)`` unit vectors.
    ``taps(x)``: the five trunk feature maps (see :meth:`WidthResNet.taps`).

    Example::

        enc = Encoder("resnet50", dim=128, head="linear")
        z = enc(torch.randn(8, 3, 96, 96))   # (8, 128), ‖z_i‖ = 1
    """

    def __init__(self, arch: str = "resnet50", dim: int = 128, head: str = "linear"):
        super().__init__()
        self.arch, self.dim, self.head_kind = arch, dim, head
        self.backbone = build_backbone(arch)
        self.head = build_head(head, self.backbone.out_channels, dim)

    @property
    def trunk_channels(self) -> tuple[int, ...]:
        """Channels of the taps (maxpool, layer1..layer4)."""
        return self.backbone.trunk_channels

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.head(self.backbone(x)), dim=1)

    def taps(self, x: Tensor) -> list[Tensor]:
        return self.backbone.taps(x)

    def forward_with_taps(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``(self(x), self.taps(x))`` from one trunk pass (the embedding pools the last tap)."""
        taps = self.backbone.taps(x)
        return F.normalize(self.head(torch.flatten(self.backbone.avgpool(taps[-1]), 1)), dim=1), taps


# --------------------------------------------------------------------------- weights in and out

_DROP_PREFIXES = ("encoder_k.", "module.encoder_k.", "optim/", "extra/")  # key encoder, optimizer state
# "encoder.module." is the reference code's InsResNet50 (a DataParallel inside ``encoder``), ckpt["model"]
_STRIP_PREFIXES = ("model/", "module.", "model.", "encoder_q.", "encoder.", "backbone.")
_IGNORED_TOP = ("fc.", "head.")  # classifiers / projection heads: never part of the trunk
_IGNORED_KEYS = ("queue", "queue_ptr")


@dataclass
class LoadReport:
    """What :func:`load_backbone` did, in canonical (torchvision) key names."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # trunk keys the source lacked
    unexpected: list[str] = field(default_factory=list)  # source keys that belong to no trunk key
    ignored: list[str] = field(default_factory=list)  # fc/head/key-encoder/queue/optimizer keys

    def __str__(self) -> str:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")

        parts = [f"{self.source}: loaded {len(self.loaded)} tensors"]
        if self.missing:
            parts.append(f"missing {few(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected {few(self.unexpected)}")
        if self.ignored:
            parts.append(f"ignored {len(self.ignored)} (fc/head/key encoder/queue)")
        return "; ".join(parts)


#: How files written by ``torch.save`` begin: a zip archive (torch >= 1.6) or a pickle (older, and tar legacy).
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def _check_torch_file(path: Path) -> None:
    """Refuse, with a message saying what it is, a file that is not a ``torch.save`` file at all (e.g. text)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError as e:
        raise InputError(f"cannot read weights ({e.strerror or e})", path) from None
    if head.startswith(_TORCH_MAGIC) or (len(head) > 262 and head[257:262] == b"ustar"):
        return
    what = "an empty file" if not head else ("text" if b"\0" not in head and _is_text(head) else "an unknown format")
    raise InputError(f"not a weights file: expected .safetensors or a torch.save checkpoint (.pt/.pth), found {what}",
                     path)


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start > len(head) - 4  # a multi-byte character cut by the 512-byte read
    return True


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read tensors from ``.safetensors`` or a ``torch.save`` file (``weights_only=True``, no pickle code).

    A dict holding ``"state_dict"`` or ``"model"`` (common checkpoint layouts) is unwrapped; non-tensor
    entries are dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("weights file not found", path)
    if path.suffix != ".safetensors":
        _check_torch_file(path)
    try:
        if path.suffix == ".safetensors":
            obj: object = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any decoding failure is the file's fault
        raise InputError(f"cannot read weights ({type(err).__name__}: {err})", path) from err
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise InputError(f"expected a state dict, found {type(obj).__name__}", path)
    return {k: v for k, v in obj.items() if isinstance(k, str) and torch.is_tensor(v)}


def canonical_keys(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Strip ``module.``/``model.``/``encoder_q.``/``encoder.``/``backbone.``/``model/`` prefixes.

    Keys of a key encoder (``encoder_k.``), the MoCo queue and optimizer/extra entries of our
    checkpoints are dropped.

    Returns ``(state in torchvision key names, dropped keys)``.
    """
    out, dropped = {}, []
    for key, v in state.items():
        if key.startswith(_DROP_PREFIXES) or key in _IGNORED_KEYS:
            dropped.append(key)
            continue
        k = key
        while (p := next((p for p in _STRIP_PREFIXES if k.startswith(p)), None)) is not None:
            k = k[len(p) :]
        if k.startswith("encoder_k.") or k in _IGNORED_KEYS:
            dropped.append(key)
            continue
        out[k] = v
    return out, dropped


@functools.cache
def _arch_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        net = build_backbone(arch)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def guess_arch(state: dict[str, Tensor]) -> str | None:
    """The registered architecture whose trunk keys and shapes ``state`` (canonical keys) matches, or None."""
    trunk = {k: tuple(v.shape) for k, v in state.items() if not k.startswith(_IGNORED_TOP)}
    for arch in ARCHS:
        if _arch_shapes(arch) == trunk:
            return arch
    return None


def _trunk_of(model: nn.Module) -> WidthResNet | ResNet:
    if hasattr(model, "encoder_q"):  # MoCo
        model = model.encoder_q
    if isinstance(model, Encoder):
        return model.backbone
    if isinstance(model, ResNet):
        return model
    raise TypeError(f"expected an Encoder, MoCo or ResNet, got {type(model).__name__}")


def load_backbone(
    model: nn.Module, source: str | Path | dict[str, Tensor], strict: bool = True
) -> LoadReport:
    """Load trunk weights into ``model`` (an :class:`Encoder`, a MoCo model, or a ResNet).

    ``source`` is a file (torchvision ``resnet50-*.pth``, our ``.safetensors``, a DataParallel/DDP or
    MoCo checkpoint) or a state dict. Prefixes are stripped (:func:`canonical_keys`); ``fc.*``, ``head.*``,
    the key encoder and the queue are ignored; the head of ``model`` is left as it is.

    Raises :class:`equinv.errors.InputError` naming the file when a tensor has the wrong shape (a
    different architecture), or, with ``strict``, when trunk keys are missing or unexpected.
    """
    path = None if isinstance(source, dict) else Path(source)
    raw = source if isinstance(source, dict) else read_state_dict(path)
    state, dropped = canonical_keys(raw)
    trunk = _trunk_of(model)
    arch = getattr(trunk, "arch", type(trunk).__name__)
    own = trunk.state_dict()
    report = LoadReport(source=str(path) if path is not None else "state dict", ignored=dropped)
    mismatched = []
    for k, v in state.items():
        if k.startswith(_IGNORED_TOP):
            report.ignored.append(k)
        elif k not in own:
            report.unexpected.append(k)
        elif v.shape != own[k].shape:
            mismatched.append(f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}")
        else:
            report.loaded.append(k)
    report.missing = [k for k in own if k not in state and not k.startswith(_IGNORED_TOP)]
    wrong = mismatched or (strict and (report.missing or report.unexpected)) or not report.loaded
    if wrong:
        guess = guess_arch(state)
        what = f"these weights look like {guess!r}" if guess else "these weights match no known architecture"
        detail = (
            f"shape mismatch: {'; '.join(mismatched[:3])}"
            if mismatched
            else f"missing {len(report.missing)} / unexpected {len(report.unexpected)} trunk keys "
            f"(e.g. {(report.missing + report.unexpected)[:3]})"
        )
        raise InputError(f"cannot load into {arch}: {what}; {detail}", path)
    with torch.no_grad():
        for k in report.loaded:
            own[k].copy_(state[k])
    return report


def save_backbone(model: nn.Module, path: str | Path) -> Path:
    """Save the trunk of ``model`` (Encoder, MoCo → query encoder, or ResNet) as safetensors.

    Keys are torchvision's (no prefixes, no ``fc``); BN running statistics are included. The
    architecture name is stored in the metadata under ``"arch"``. The write is atomic and
    reproducible (:func:`equinv.safefile.write_safetensors`).
    """
    trunk = _trunk_of(model)
    tensors = {k: v for k, v in trunk.state_dict().items() if not k.startswith("fc.")}
    return write_safetensors(path, tensors, {"arch": str(getattr(trunk, "arch", "")), "format": "equinv-backbone"})
