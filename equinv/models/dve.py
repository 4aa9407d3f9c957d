"""DVE descriptor networks (protocol.md §7): ``SmallNet`` and the one-stack ``Hourglass``.

Both map an image ``(B, 3, H, W)`` to dense descriptors ``(B, d, H/2, W/2)`` (stride 2).

- :class:`SmallNet` (DVE ``model/smallnet.py``): conv5×5 3→20, maxpool 2, conv5×5 20→48, conv5×5 dil 2
  48→64, conv3×3 dil 4 64→80, conv3×3 dil 2 80→256, 1×1 256→d; BN + LeakyReLU(0.2) after every conv but the
  last; "same" padding; Xavier-normal weights and zero biases. 70 px in → 35² out. 350,552 parameters at d=64.
- :class:`Hourglass` (DVE ``model/hourglass.py``, ``HourglassNet(num_stacks=1, num_blocks=4)``): stem
  conv7×7/2 3→64 + BN + ReLU; three pre-activation bottlenecks (expansion 2) 64→128, 128→256, 256→256; one
  hourglass of depth 4 (4 blocks per level, max-pool down, nearest up, skip addition); head 4 blocks →
  1×1 256→256 → BN → ReLU → 1×1 256→d. BatchNorm momentum 0.3 as the reference's ``make_bn``.
  96 px in → 48² out. **12,609,472 parameters at d=64** — the paper's 12.61 M.

Shortcuts: the reference gives a block a 1×1 projection shortcut only when its input and output widths
differ (``inplanes != planes·2``), so the third stem stage (256→256) has an identity shortcut. The protocol
text lists a projection for 256→256 too; with it the network would have 12,675,264 parameters (12.68 M),
which does not match the paper's 12.61 M, so the default follows the code (``project_all=False``).

The input side of the hourglass must be divisible by 32 (stride 2 stem, 4 poolings).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from equinv.errors import InputError
from equinv.safefile import read_safetensors, write_safetensors

ARCHS = ("smallnet", "hourglass")


def _conv_block(cin: int, cout: int, k: int, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k - 1) // 2
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.2))


class SmallNet(nn.Module):
    """The NeurIPS-2017-style SmallNet of DVE; output stride 2 (70 → 35)."""

    stride = 2

    def __init__(self, dim: int = 64):
        super().__init__()
        self.dim = dim
        self.conv1 = _conv_block(3, 20, 5)
        self.mp = nn.MaxPool2d(2, 2)
        self.conv2 = _conv_block(20, 48, 5)
        self.conv3 = _conv_block(48, 64, 5, dilation=2)
        self.conv4 = _conv_block(64, 80, 3, dilation=4)
        self.conv5 = _conv_block(80, 256, 3, dilation=2)
        self.conv6 = nn.Conv2d(256, dim, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mp(self.conv1(x))
        x = self.conv5(self.conv4(self.conv3(self.conv2(x))))
        return self.conv6(x)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, momentum=0.3)


class Bottleneck(nn.Module):
    """Pre-activation bottleneck (BN-ReLU-conv ×3), expansion 2, biases on, optional 1×1 projection."""

    expansion = 2

    def __init__(self, inplanes: int, planes: int, project: bool | None = None):
        super().__init__()
        out = planes * self.expansion
        self.bn1, self.conv1 = _bn(inplanes), nn.Conv2d(inplanes, planes, 1)
        self.bn2, self.conv2 = _bn(planes), nn.Conv2d(planes, planes, 3, padding=1)
        self.bn3, self.conv3 = _bn(planes), nn.Conv2d(planes, out, 1)
        self.relu = nn.ReLU(inplace=True)
        if project is None:
            project = inplanes != out
        self.downsample = nn.Conv2d(inplanes, out, 1) if project else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + (x if self.downsample is None else self.downsample(x))


def _blocks(channels: int, n: int) -> nn.Sequential:
    return nn.Sequential(*[Bottleneck(channels, channels // 2) for _ in range(n)])


class HourglassLevel(nn.Module):
    """One level of the recursive hourglass: ``up(inner(pool(x))) + skip(x)``."""

    def __init__(self, depth: int, channels: int, num_blocks: int):
        super().__init__()
        self.skip = _blocks(channels, num_blocks)  # reference layer{n}_1
        self.pool = nn.MaxPool2d(2, 2)
        self.down = _blocks(channels, num_blocks)  # layer{n}_2
        self.inner = (HourglassLevel(depth - 1, channels, num_blocks) if depth > 1
                      else _blocks(channels, num_blocks))  # recursion or layer1_4
        self.up_blocks = _blocks(channels, num_blocks)  # layer{n}_3
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skip(x)
        y = self.up_blocks(self.inner(self.down(self.pool(skip))))
        return skip + self.up(y)


class Hourglass(nn.Module):
    """DVE's one-stack hourglass; output stride 2 (96 → 48)."""

    stride = 2

    def __init__(self, dim: int = 64, num_blocks: int = 4, depth: int = 4, project_all: bool = False):
        super().__init__()
        self.dim = dim
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.bn1 = _bn(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = Bottleneck(64, 64)  # 64 → 128 (projection)
        self.layer2 = Bottleneck(128, 128)  # 128 → 256 (projection)
        self.layer3 = Bottleneck(256, 128, project=True if project_all else None)  # 256 → 256 (identity)
        self.hg = HourglassLevel(depth, 256, num_blocks)
        self.head = nn.Sequential(_blocks(256, num_blocks), nn.Conv2d(256, 256, 1), _bn(256),
                                  nn.ReLU(inplace=True), nn.Conv2d(256, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.head(self.hg(x))


def build_dve(arch: str, dim: int = 64) -> nn.Module:
    """A DVE descriptor network: ``smallnet`` or ``hourglass`` with ``dim`` output channels."""
    if arch == "smallnet":
        return SmallNet(dim)
    if arch == "hourglass":
        return Hourglass(dim)
    raise ValueError(f"unknown DVE architecture {arch!r}; choose one of {', '.join(ARCHS)}")


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


def save_dve(model: nn.Module, path: str | Path, arch: str, **extra) -> Path:
    """Write the descriptor network's state dict as safetensors; ``arch``, ``dim`` and extras in metadata."""
    meta = {"arch": arch, "dim": int(model.dim), **extra}
    return write_safetensors(path, model.state_dict(), {"equinv_dve": json.dumps(meta, sort_keys=True)})


def is_dve_weights(path: str | Path | None) -> bool:
    """Whether ``path`` is a DVE run dir (it holds ``descriptor.safetensors``) or a DVE weights file.

    A file that is not readable safetensors is not DVE weights (whoever loads it says what is wrong).
    """
    if path in (None, "", "random"):
        return False
    p = Path(path)
    if p.is_dir():
        return (p / "descriptor.safetensors").is_file()
    if p.suffix != ".safetensors" or not p.is_file():
        return False
    try:
        with safe_open(str(p), framework="pt") as f:
            return "equinv_dve" in (f.metadata() or {})
    except Exception:  # safetensors raises its own error types for a bad header
        return False


def load_dve(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a network written by :func:`save_dve`; returns ``(model in eval mode, metadata)``."""
    state, raw = read_safetensors(path, device, what="DVE weights")
    if "equinv_dve" not in raw:
        raise InputError("not an equinv DVE weights file (no equinv_dve metadata)", path)
    meta = json.loads(raw["equinv_dve"])
    model = build_dve(meta["arch"], meta["dim"])
    model.load_state_dict(state)
    return model.to(device).eval(), meta
