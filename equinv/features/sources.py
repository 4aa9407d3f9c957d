"""Feature sources: a :class:`~equinv.features.spec.FeatureSpec` → an ``nn.Module`` giving per-layer maps.

Every head (the keypoint regressor, the segmentation head, matching and transfer descriptors, the viewer)
reads a *source*: an ``nn.Module`` with

* ``taps``: names of its maps, ``channels``: their channel counts,
* ``maps(x)``: the maps of a normalised input batch ``(B, 3, S, S)``, each at its own native resolution
  (the factorised form that :class:`~equinv.models.hypercolumn.FactorisedConv1x1` consumes),
* ``stats``: input statistics it was trained with (``None``: the dataset kind decides),
* ``spec``: the :class:`FeatureSpec` it was built from.

Kinds: ``hypercolumn`` (:class:`~equinv.models.hypercolumn.Hypercolumn` of a frozen ResNet), ``projected``
(a trained projector over it: one ``d``-channel map at the grid, read after the projector's spatial softmax,
``output``, or before it, ``linear``, the paper's ``Φ' = wᵀΦ``; a projector trained with its trunk,
``equinv project --trunk-lr``, brings that trunk), ``nmf`` (non-negative coefficients of a
fitted NMF parts model at the grid) and ``dve`` (a DVE descriptor network; inputs resized to the size it was
trained at, 70 px for SmallNet, 96 for the Hourglass, as DVE does).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from equinv import precision as precision_lib
from equinv.errors import InputError
from equinv.features.spec import FeatureSpec
from equinv.models.hypercolumn import Hypercolumn, frozen_trunk
from equinv.models.parts import TENSORS, PartsModel


def layerwise_normalize(desc: Tensor, channels=None) -> Tensor:
    """L2-normalise each channel block of ``(B, C, H, W)`` per pixel (the whole vector when ``channels`` is None)."""
    if channels is None:
        return F.normalize(desc, dim=1)
    return torch.cat([F.normalize(d, dim=1) for d in torch.split(desc, list(channels), dim=1)], dim=1)


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
        self.hypercolumn, self.projector, self.grid, self.readout = hypercolumn, projector, grid, readout
        self.taps, self.channels, self.stats = ("projected",), (int(projector.dim),), None

    def maps(self, x: Tensor) -> list[Tensor]:
        """``[(B, d, grid, grid)]``."""
        hc = self.hypercolumn.maps(x)
        if self.readout == "linear":
            return [self.projector.linear(hc, self.grid)]
        return [self.projector(hc, self.grid)]


class NMFSource(nn.Module):
    """NMF part coefficients of the hypercolumn at ``grid`` (per-layer normalised when the model was).

    The parts model's tensors are buffers, so they move with the module and are part of its state dict.
    """

    def __init__(self, hypercolumn: Hypercolumn, parts: PartsModel, grid: int = 48):
        super().__init__()
        if parts.method != "nmf":
            raise InputError(f"--parts holds a {parts.method} model; the nmf source needs an NMF fit")
        if int(parts.components.shape[1]) != hypercolumn.dim:
            raise InputError(f"the parts model reads {int(parts.components.shape[1])}-d hypercolumns but the "
                             f"backbone gives {hypercolumn.dim}: give the --arch/--layers it was fitted on")
        self.hypercolumn, self.grid = hypercolumn, grid
        self._settings = (parts.method, parts.layerwise, parts.centered, dict(parts.meta))
        for k in TENSORS:
            self.register_buffer(f"parts_{k}", getattr(parts, k).float().clone())
        self.taps, self.channels, self.stats = ("nmf",), (int(parts.dim),), None

    @property
    def parts(self) -> PartsModel:
        """The parts model, on the module's device."""
        method, layerwise, centered, meta = self._settings
        return PartsModel(method, *(getattr(self, f"parts_{k}") for k in TENSORS), layerwise, centered, meta)

    def maps(self, x: Tensor) -> list[Tensor]:
        """``[(B, d, grid, grid)]`` non-negative coefficients."""
        parts = self.parts
        hc = self.hypercolumn(x, self.grid)
        if parts.layerwise:
            hc = layerwise_normalize(hc, self.hypercolumn.channels)
        return [parts.transform_maps(hc)]


class DVESource(nn.Module):
    """A DVE descriptor network; inputs resized to its training side first."""

    #: Compute precision and memory order of the network pass (:mod:`equinv.precision`); maps come back fp32.
    precision: str = precision_lib.DEFAULT
    channels_last: bool = False

    def __init__(self, net: nn.Module, input_size: int, arch: str = "dve"):
        super().__init__()
        self.net, self.input_size, self.arch = net, int(input_size), arch
        self.taps, self.channels, self.stats = ("dve",), (int(net.dim),), "face"

    def maps(self, x: Tensor) -> list[Tensor]:
        """``[(B, d, h, w)]``: the network's output map."""
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=True)
        out = precision_lib.run(self.net, x, self.precision, self.channels_last)
        return [precision_lib.plain(out, self.precision, self.channels_last)]


def _freeze(module: nn.Module, device) -> nn.Module:
    for q in module.parameters():
        q.requires_grad_(False)
    return module.to(device).eval()


def _dve_source(spec: FeatureSpec, device) -> DVESource:
    from equinv.models.dve import load_dve

    if spec.weights is None:
        raise InputError("the dve source needs --backbone DVE_RUN (from equinv pretrain --method dve)")
    p = Path(spec.weights)
    net, meta = load_dve(p / "descriptor.safetensors" if p.is_dir() else p, device)
    return DVESource(_freeze(net, device), int(meta.get("input_size", 96)), str(meta.get("arch", "dve")))


def hypercolumn_of(spec: FeatureSpec, trunk: nn.Module | None = None, grid: int = 48) -> Hypercolumn:
    """The frozen hypercolumn of ``spec``'s trunk (``trunk``: an already built one, e.g. in tests)."""
    weights = spec.weights
    if weights is not None and not Path(weights).exists():
        raise InputError("backbone weights not found (give a run dir, a weights file or 'random')", weights)
    if trunk is None:
        trunk = frozen_trunk(spec.arch, weights, seed=spec.seed)
    try:
        hc = Hypercolumn(trunk, spec.hypercolumn_taps, size=grid)
    except ValueError as e:
        raise InputError(str(e)) from None
    hc.precision, hc.channels_last = spec.precision, bool(spec.channels_last)
    return precision_lib.prepare(hc, spec.precision, spec.channels_last)


def build_source(spec: FeatureSpec, device="cpu", *, trunk: nn.Module | None = None) -> nn.Module:
    """The frozen source ``spec`` describes, in eval mode on ``device``, with ``.spec`` set (resolved).

    ``spec.grid`` sets the side of projected / NMF maps (48 when unset); a backbone that is a DVE run selects
    the ``dve`` kind. ``trunk``: an already built trunk to read (tests; ResNet kinds only).
    """
    spec = spec.resolved()
    grid = spec.grid or 48
    if spec.source == "dve":
        src: nn.Module = _dve_source(spec, device)
    else:
        hc = hypercolumn_of(spec, trunk, grid)
        if spec.source == "hypercolumn":
            src = hc
        elif spec.source == "projected":
            if spec.projector is None:
                raise InputError("the projected source needs --projector RUN_OR_CHECKPOINT (from equinv project)")
            from equinv.models.projector import read_projector

            saved = read_projector(spec.projector, device)
            src = ProjectedSource(hc, _freeze(saved.projector, device), grid, spec.readout or "output")
            if saved.trunk is not None:
                _read_tuned_trunk(hc, saved.trunk, spec.projector)
        else:
            if spec.parts is None:
                raise InputError("the nmf source needs --parts FILE (from equinv parts --method nmf)")
            src = NMFSource(hc, PartsModel.load(spec.parts), grid)
    _set_precision(src, spec, device)
    src = _freeze(src, device)
    src.spec = spec
    return src


def _read_tuned_trunk(hc: Hypercolumn, state: dict, projector: str) -> None:
    """Give ``hc`` the trunk a projector was trained with (``equinv project --trunk-lr``): its descriptors mean
    nothing on any other trunk, whatever ``--backbone`` names (the backbone it started from)."""
    try:
        hc.extractor.load_state_dict(state)
    except RuntimeError as e:
        raise InputError(f"the projector's fine-tuned trunk does not fit this hypercolumn ({str(e).splitlines()[0]}); "
                         "give the --arch/--layers it was trained with", projector) from None


def _set_precision(src: nn.Module, spec: FeatureSpec, device) -> None:
    """Run the network pass of ``src`` (its trunk or DVE net) at the spec's precision and memory order."""
    if not precision_lib.supported(spec.precision, device):
        raise InputError(f"--precision {spec.precision} is not supported on {device}; use --precision fp32")
    net = src.hypercolumn if isinstance(src, (ProjectedSource, NMFSource)) else src
    net.precision, net.channels_last = spec.precision, bool(spec.channels_last)
    precision_lib.prepare(net, spec.precision, spec.channels_last)


def native_side(source: nn.Module, size: int = 96) -> int:
    """Side of the source's first map for a ``size`` input."""
    p = next(source.parameters(), None)
    dev = p.device if p is not None else torch.device("cpu")
    with torch.no_grad():
        return int(source.maps(torch.zeros(1, 3, size, size, device=dev))[0].shape[-1])


def source_config(source: nn.Module) -> dict:
    """What rebuilding ``source`` without its files needs beside its spec (see :func:`source_skeleton`)."""
    if isinstance(source, DVESource):
        return {"dve_arch": source.arch, "dim": int(source.net.dim), "input_size": source.input_size}
    if isinstance(source, ProjectedSource):
        p = source.projector
        return {"projector": {"dim": int(p.dim), "mode": p.mode, "softargmax_mul": float(p.softargmax_mul)}}
    if isinstance(source, NMFSource):
        method, layerwise, centered, _ = source._settings
        return {"parts": {"method": method, "layerwise": layerwise, "centered": centered,
                          "dim": int(source.channels[0]), "in_dim": source.hypercolumn.dim}}
    return {}


def source_skeleton(spec: FeatureSpec, config: dict, device="cpu") -> nn.Module:
    """The architecture of a source (random weights, no files read) to load a saved state dict into.

    ``spec`` and ``config`` are what :func:`build_source` and :func:`source_config` recorded.
    """
    if spec.source == "dve":
        from equinv.models.dve import build_dve

        net = build_dve(config["dve_arch"], int(config["dim"]))
        src: nn.Module = DVESource(net, int(config["input_size"]), config["dve_arch"])
    else:
        hc = Hypercolumn(frozen_trunk(spec.arch, None, seed=0), spec.hypercolumn_taps, size=spec.grid or 48)
        if spec.source == "hypercolumn":
            src = hc
        elif spec.source == "projected":
            from equinv.models.projector import Projector

            c = config["projector"]
            proj = Projector(hc.channels, int(c["dim"]), c["mode"], float(c["softargmax_mul"]))
            src = ProjectedSource(hc, proj, spec.grid or 48, spec.readout or "output")
        else:
            c = config["parts"]
            d, n = int(c["dim"]), int(c["in_dim"])
            parts = PartsModel(c["method"], torch.zeros(d, n), torch.zeros(n), torch.zeros(d), torch.ones(d),
                               bool(c["layerwise"]), bool(c["centered"]))
            src = NMFSource(hc, parts, spec.grid or 48)
    _set_precision(src, spec, device)
    src = _freeze(src, device)
    src.spec = spec
    return src
