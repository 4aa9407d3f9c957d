"""Feature sources: what a (frozen) network gives an evaluation head, as per-layer maps.

Every evaluation head (the keypoint regressor, the segmentation head, the matching descriptors) reads a
*source*: an ``nn.Module`` with

* ``taps``: names of its maps, ``channels``: their channel counts,
* ``maps(x)``: the maps of a normalised input batch, each at its own native resolution (the factorised
  form that :class:`~equinv.models.hypercolumn.FactorisedConv1x1` consumes),
* ``stats``: the input statistics it was trained with (``None``: the dataset kind decides),
* ``native``: the side of its first map for a 96-px input (the grid a single layer is read at).

Kinds (:func:`build_source`):

``hypercolumn``
    :class:`~equinv.models.hypercolumn.Hypercolumn` of a frozen ResNet: the reference's ``--layer N``
    (deepest first) or any explicit tap list, e.g. a single layer for Table 3.
``projected``
    a trained projector (``equinv project``) over the hypercolumn: one ``d``-channel map at the grid
    (the paper's "+proj" rows; the released code never regresses on it, §9), read after the projector's
    spatial softmax (``output``) or before it (``linear``, the paper's ``Φ' = wᵀΦ``).
``nmf``
    the non-negative coefficients of a fitted NMF parts model (Table 4 "NMF-64") at the grid.
``dve``
    a DVE descriptor network (``equinv pretrain --method dve``): its output map; inputs are resized to
    the network's training size (70 px for SmallNet, 96 for the Hourglass) as DVE does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from equinv.errors import InputError
from equinv.evaluate.descriptors import layerwise_normalize
from equinv.models.backbones import TAP_NAMES
from equinv.models.hypercolumn import Hypercolumn, frozen_trunk, reference_taps

SOURCE_KINDS = ("hypercolumn", "projected", "nmf", "dve")

#: Paper / ResNet block names accepted for taps besides torchvision's.
TAP_ALIASES = {"pool": "maxpool", "conv1": "maxpool", "conv2": "layer1", "conv3": "layer2", "conv4": "layer3",
               "conv5": "layer4", "conv2_x": "layer1", "conv3_x": "layer2", "conv4_x": "layer3",
               "conv5_x": "layer4"}


def parse_taps(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"layer3"`` / ``"conv4,conv5"`` / a list → torchvision tap names (deepest-first order kept as given)."""
    if text is None or text == "" or text == []:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for t in items:
        t = t.strip()
        name = TAP_ALIASES.get(t, t)
        if name not in TAP_NAMES:
            raise InputError(f"unknown tap {t!r}; choose from {', '.join(TAP_NAMES)} (or conv2..conv5, pool)")
        out.append(name)
    if len(set(out)) != len(out):
        raise InputError(f"repeated tap in {text!r}")
    return tuple(out)


def native_side(source: nn.Module, size: int = 96) -> int:
    """Side of the source's first map for a ``size`` input."""
    p = next(source.parameters(), None)
    dev = p.device if p is not None else torch.device("cpu")
    with torch.no_grad():
        return int(source.maps(torch.zeros(1, 3, size, size, device=dev))[0].shape[-1])


PROJECTED_READOUTS = ("linear", "output")


class ProjectedSource(nn.Module):
    """A trained projector over a hypercolumn: one ``d``-channel map at ``grid``.

    ``readout``: ``output`` is what the projector outputs (for the reference's ``softmax`` projector, ``d``
    spatial softmax maps that each sum to 1: its matching descriptor); ``linear`` is the projection
    ``wᵀΦ + b`` before that softmax, the paper's ``Φ' = wᵀΦ`` (P:91) and the same thing for a ``linear``
    projector.
    """

    def __init__(self, hypercolumn: Hypercolumn, projector: nn.Module, grid: int = 48, readout: str = "output"):
        super().__init__()
        if tuple(projector.channels) != tuple(hypercolumn.channels):
            raise InputError(f"the projector reads channels {tuple(projector.channels)} but the hypercolumn has "
                             f"{tuple(hypercolumn.channels)}: give the --arch/--layers it was trained with")
        if readout not in PROJECTED_READOUTS:
            raise InputError(f"unknown projector readout {readout!r}; choose from {', '.join(PROJECTED_READOUTS)}")
        self.hypercolumn, self.projector, self.grid, self.readout = hypercolumn, projector, grid, readout
        self.taps, self.channels, self.stats = ("projected",), (int(projector.dim),), None

    def maps(self, x: Tensor) -> list[Tensor]:
        hc = self.hypercolumn.maps(x)
        if self.readout == "linear":
            return [self.projector.linear(hc, self.grid)]
        return [self.projector(hc, self.grid)]


class NMFSource(nn.Module):
    """NMF part coefficients of the hypercolumn at ``grid`` (per-layer normalised when the model was)."""

    def __init__(self, hypercolumn: Hypercolumn, parts, grid: int = 48):
        super().__init__()
        if parts.method != "nmf":
            raise InputError(f"--parts holds a {parts.method} model; the nmf source needs an NMF fit")
        self.hypercolumn, self.parts, self.grid = hypercolumn, parts, grid
        self.taps, self.channels, self.stats = ("nmf",), (int(parts.dim),), None

    def maps(self, x: Tensor) -> list[Tensor]:
        hc = self.hypercolumn(x, self.grid)
        if self.parts.layerwise:
            hc = layerwise_normalize(hc, self.hypercolumn.channels)
        return [self.parts.transform_maps(hc)]


class DVESource(nn.Module):
    """A DVE descriptor network; inputs resized to its training side first."""

    def __init__(self, net: nn.Module, input_size: int, arch: str = "dve"):
        super().__init__()
        self.net, self.input_size, self.arch = net, int(input_size), arch
        self.taps, self.channels, self.stats = ("dve",), (int(net.dim),), "face"

    def maps(self, x: Tensor) -> list[Tensor]:
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=True)
        return [self.net(x)]


def is_dve(path: str | Path | None) -> bool:
    """Whether ``path`` is a DVE run dir or DVE weights file (``descriptor.safetensors`` with DVE metadata)."""
    if path in (None, "", "random"):
        return False
    p = Path(path)
    if p.is_dir():
        return (p / "descriptor.safetensors").is_file()
    if p.suffix != ".safetensors" or not p.is_file():
        return False
    from safetensors import safe_open

    with safe_open(str(p), framework="pt") as f:
        return "equinv_dve" in (f.metadata() or {})


def build_source(kind: str = "hypercolumn", *, backbone: str | Path | None = None, arch: str = "resnet18",
                 layers: int = 4, taps: Sequence[str] | None = None, projector: str | Path | None = None,
                 parts: str | Path | None = None, grid: int = 48, seed: int = 0, trunk: nn.Module | None = None,
                 device="cpu", readout: str = "output") -> nn.Module:
    """A feature source of ``kind`` on ``device`` (eval mode, frozen).

    Args:
        kind: ``hypercolumn`` | ``projected`` | ``nmf`` | ``dve`` (``dve`` is also chosen automatically
            when ``backbone`` is a DVE run or weights file).
        backbone: run dir, weights file or ``None``/``"random"`` (seeded random init).
        arch: ResNet architecture (ignored for DVE).
        layers: the reference's ``--layer`` (first N taps deepest first) when ``taps`` is not given.
        taps: explicit taps, e.g. ``("layer3",)`` for a single layer.
        projector: ``equinv project`` run or checkpoint (``projected``).
        parts: NMF parts file from ``equinv parts --method nmf`` (``nmf``).
        grid: side of projected / NMF maps.
        readout: ``projected`` only: ``output`` (what the projector outputs) or ``linear`` (before its
            spatial softmax), see :class:`ProjectedSource`.
        trunk: an already built trunk (tests).
    """
    if kind not in SOURCE_KINDS:
        raise InputError(f"unknown feature source {kind!r}; choose from {', '.join(SOURCE_KINDS)}")
    if kind == "dve" or is_dve(backbone):
        if backbone in (None, "", "random"):
            raise InputError("the dve source needs --backbone DVE_RUN (from equinv pretrain --method dve)")
        from equinv.models.dve import load_dve

        p = Path(backbone)
        net, meta = load_dve(p / "descriptor.safetensors" if p.is_dir() else p, device)
        for q in net.parameters():
            q.requires_grad_(False)
        return DVESource(net, int(meta.get("input_size", 96)), str(meta.get("arch", "dve"))).to(device).eval()
    weights = None if backbone in (None, "", "random") else backbone
    if weights is not None and not Path(weights).exists():
        raise InputError("backbone weights not found (give a run dir, a weights file or 'random')", weights)
    if trunk is None:
        trunk = frozen_trunk(arch, weights, seed=seed)
    try:
        hc = Hypercolumn(trunk, tuple(taps) if taps else reference_taps(layers), size=grid)
    except ValueError as e:
        raise InputError(str(e)) from None
    hc.stats = None
    if kind == "hypercolumn":
        return hc.to(device).eval()
    if kind == "projected":
        if projector is None:
            raise InputError("the projected source needs --projector RUN_OR_CHECKPOINT (from equinv project)")
        from equinv.evaluate.descriptors import load_projector

        proj = load_projector(projector, device)
        for q in proj.parameters():
            q.requires_grad_(False)
        return ProjectedSource(hc, proj, grid, readout).to(device).eval()
    if parts is None:
        raise InputError("the nmf source needs --parts FILE (from equinv parts --method nmf)")
    from equinv.evaluate.parts import PartsModel

    # the parts model is a plain object: it goes to the device here, the module's .to() does not move it
    return NMFSource(hc, PartsModel.load(parts).to(device), grid).to(device).eval()


def source_forward(source: nn.Module, x: Tensor, size: int) -> Tensor:
    """The materialised ``(B, ΣC, size, size)`` features of any source (bilinear per map)."""
    ups = [m if m.shape[-1] == size and m.shape[-2] == size
           else F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False) for m in source.maps(x)]
    return torch.cat(ups, dim=1)
