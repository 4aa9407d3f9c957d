"""Descriptors and part maps for the viewer: the one module that calls equinv's descriptor API.

Everything the page shows about a representation comes from :func:`compute` (dense descriptors of one
feature source) and :func:`part_maps` (NMF part labels); both take a :class:`Features` description, so
rewiring the viewer to another descriptor API means changing this file only.

Frames: images are uint8 canvases ``(B, 3, C, C)`` of a dataset with preprocessing ``pre``; descriptors are
computed on the centre ``pre.size`` view and returned on a ``grid × grid`` lattice over that view.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from equinv.errors import InputError

#: Sources the page can show; ``dve`` reads a DVE run (``--backbone`` or ``--dve``).
SOURCES = ("hypercolumn", "projected", "nmf", "dve")


@dataclass(frozen=True)
class Features:
    """What to describe images with (the viewer's feature flags).

    Attributes:
        backbone: pretraining run dir, weights file, ``random``, or a DVE run.
        arch, layers, seed: the ResNet trunk, its hypercolumn depth (reference ``--layer``) and random seed.
        sources: the exported sources, in page order.
        projector: ``equinv project`` run or checkpoint (``projected``).
        parts: NMF parts file from ``equinv parts --method nmf`` (``nmf`` source and the parts view).
        dve: a DVE run exported as the ``dve`` source beside a ResNet backbone.
        grid: descriptor lattice side over the evaluated view.
        stats: input statistics (``face`` / ``imagenet``); ``None``: by dataset kind.
    """

    backbone: str = "random"
    arch: str = "resnet18"
    layers: int = 4
    sources: tuple[str, ...] = ("hypercolumn",)
    projector: str | None = None
    parts: str | None = None
    dve: str | None = None
    grid: int = 48
    stats: str | None = None
    seed: int = 0

    def dve_run(self) -> str | None:
        """The DVE run the ``dve`` source reads (``--dve``, else a DVE ``--backbone``)."""
        from equinv.evaluate.sources import is_dve

        return self.dve or (self.backbone if is_dve(self.backbone) else None)

    def check(self) -> None:
        """Raise :class:`InputError` for a backbone that is not a run and for impossible combinations."""
        from equinv.evaluate.sources import is_dve

        check_run(self.backbone, "--backbone")
        if self.dve is not None:
            check_run(self.dve, "--dve")
            if not is_dve(self.dve):
                raise InputError("not a DVE run (no descriptor.safetensors with DVE metadata)", self.dve)
        if self.grid < 1:
            raise InputError(f"--grid must be positive, got {self.grid}")
        unknown = [s for s in self.sources if s not in SOURCES]
        if unknown or not self.sources:
            raise InputError(f"unknown --source {','.join(unknown) or '(empty)'}; choose from {', '.join(SOURCES)}")
        resnet = [s for s in self.sources if s != "dve"]
        if resnet and is_dve(self.backbone):
            raise InputError(f"--source {','.join(resnet)} needs a ResNet --backbone; {self.backbone} is a DVE run")
        if "dve" in self.sources and self.dve_run() is None:
            raise InputError("--source dve needs a DVE run: --backbone DVE_RUN or --dve DVE_RUN")
        if "projected" in self.sources and not self.projector:
            raise InputError("--source projected needs --projector RUN_OR_CHECKPOINT (from equinv project)")
        if "nmf" in self.sources and not self.parts:
            raise InputError("--source nmf needs --parts FILE (from equinv parts --method nmf)")
        if self.parts and is_dve(self.backbone):
            raise InputError("--parts needs the ResNet --backbone the parts were fitted on, not a DVE run")


def check_run(path: str | None, flag: str) -> None:
    """A run directory must hold weights; a file must exist (``random`` / None pass)."""
    if path in (None, "", "random"):
        return
    p = Path(path)
    if not p.exists():
        raise InputError(f"{flag}: no such run or weights file (give a run dir, a weights file or 'random')", p)
    if p.is_dir() and not any((p / f).is_file() for f in ("backbone.safetensors", "descriptor.safetensors")):
        raise InputError(f"{flag}: not a run (no backbone.safetensors or descriptor.safetensors in it)", p)


def _hypercolumn(feats: Features, device):
    from equinv.evaluate.sources import build_source

    return build_source("hypercolumn", backbone=feats.backbone, arch=feats.arch, layers=feats.layers,
                        grid=feats.grid, seed=feats.seed, device=device)


def _stats(feats: Features, data_kind: str) -> str:
    from equinv.evaluate.descriptors import stats_for_kind

    return feats.stats or stats_for_kind(data_kind)


@torch.no_grad()
def compute(groups: Sequence[tuple[Tensor, object, str]], feats: Features, source: str, device="cpu",
            batch: int = 16) -> Tensor:
    """Descriptors ``(B, D, S, S)`` (S = ``feats.grid``), unit L2 norm per pixel, on the CPU.

    Args:
        groups: ``(images, pre, data_kind)`` per dataset: uint8 canvases ``(b, 3, C, C)``, their
            :class:`~equinv.data.preprocess.Preprocess` and dataset kind (for the input statistics);
            the outputs are concatenated in order.
        feats: the feature description; ``source`` one of :data:`SOURCES`.
    """
    from equinv.evaluate.descriptors import DescriptorSpec, describe, load_projector, prepare_input

    out = []
    if source == "dve":
        from equinv.evaluate.sources import build_source

        net = build_source("dve", backbone=feats.dve_run(), device=device)
        for images, pre, _ in groups:
            for i in range(0, images.shape[0], batch):
                # DVE nets are trained on face statistics (as equinv eval match); cosine like every source
                d = net.maps(prepare_input(images[i : i + batch], pre, "face", device))[0]
                d = F.interpolate(d, size=(feats.grid, feats.grid), mode="bilinear", align_corners=False)
                out.append(F.normalize(d, dim=1).cpu())
        return torch.cat(out)
    hc = _hypercolumn(feats, device)
    projector = load_projector(feats.projector, device) if source == "projected" else None
    if projector is not None and tuple(projector.channels) != tuple(hc.channels):
        raise InputError(f"reads channels {tuple(projector.channels)} but --arch {feats.arch} --layers {feats.layers} "
                         f"gives {tuple(hc.channels)}: use the backbone the projector was trained on", feats.projector)
    parts = _parts_model(feats, hc, device) if source == "nmf" else None
    for images, pre, kind in groups:
        spec = DescriptorSpec(source, feats.grid, layerwise=True, stats=_stats(feats, kind))
        out.append(describe(images, hc, spec, projector=projector, parts=parts, pre=pre, device=device,
                            batch=batch).cpu())
    return torch.cat(out)


def _parts_model(feats: Features, hc, device):
    from equinv.evaluate.parts import PartsModel

    model = PartsModel.load(feats.parts)
    if model.method != "nmf":
        raise InputError(f"holds a {model.method} model; the viewer shows NMF parts", feats.parts)
    have = sum(hc.channels)
    if model.components.shape[1] != have:
        raise InputError(f"fitted on {model.components.shape[1]}-channel hypercolumns, but --arch {feats.arch} "
                         f"--layers {feats.layers} gives {have}: use the backbone the parts were fitted on",
                         feats.parts)
    return model.to(device)


@torch.no_grad()
def part_maps(groups: Sequence[tuple[Tensor, object, str]], feats: Features,
              device="cpu") -> tuple[Tensor, Tensor, int]:
    """NMF part labels ``(B, S, S)`` int64, their strength ``(B, S, S)`` in [0, 1] (the winning
    coefficient over its fitted range, as ``equinv parts`` draws them), on the CPU, and the number of parts."""
    from equinv.evaluate.parts import part_coefficients, part_labels

    hc = _hypercolumn(feats, device)
    model = _parts_model(feats, hc, device)
    labels, strength = [], []
    for images, pre, kind in groups:
        c = part_coefficients(model, hc, images, pre=pre, stats=_stats(feats, kind), size=feats.grid, device=device)
        labels.append(part_labels(c))
        strength.append(model.scaled(c.to(model.lo.device)).amax(1).cpu())
    return torch.cat(labels), torch.cat(strength), model.dim


def describe_source(feats: Features, source: str) -> str:
    """One line saying what a source is, for the page."""
    if source == "dve":
        return f"DVE descriptors of {feats.dve_run()}"
    base = f"{feats.arch} hypercolumn (--layers {feats.layers}) of {feats.backbone}"
    if source == "projected":
        return f"projector {feats.projector} over the {base}"
    if source == "nmf":
        return f"NMF coefficients ({feats.parts}) of the {base}"
    return f"{base}, each layer L2-normalised"
