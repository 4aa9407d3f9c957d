"""Descriptors and part maps for the viewer: the one module that calls equinv's descriptor API.

Everything the page shows about a representation comes from :func:`compute` (dense descriptors of one
feature source, :func:`equinv.features.descriptors.describe`) and :func:`part_maps` (NMF part labels); both take
a :class:`Features` description: the shared :class:`~equinv.features.spec.FeatureSpec` of the command's feature
flags, the sources to export and an optional DVE run shown beside a ResNet backbone.

Frames: images are uint8 canvases ``(B, 3, C, C)`` of a dataset with preprocessing ``pre``; descriptors are
computed on the centre ``pre.size`` view and returned on a ``grid × grid`` lattice over that view.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from equinv.errors import InputError
from equinv.features.descriptors import describe
from equinv.features.sources import build_source
from equinv.features.spec import FeatureSpec
from equinv.features.stats import stats_for_kind
from equinv.models.dve import is_dve_weights

#: Sources the page can show; ``dve`` reads a DVE run (``--backbone`` or ``--dve``).
SOURCES = ("hypercolumn", "projected", "nmf", "dve")


@dataclass(frozen=True)
class Features:
    """What to describe images with (the viewer's feature flags).

    Attributes:
        spec: the feature source of the shared flags (backbone, arch, layers or taps, projector, parts, grid,
            stats, seed); its ``source`` is ignored in favour of ``sources``.
        sources: the exported sources, in page order.
        dve: a DVE run exported as the ``dve`` source beside a ResNet backbone.
    """

    spec: FeatureSpec = FeatureSpec(grid=48)
    sources: tuple[str, ...] = ("hypercolumn",)
    dve: str | None = None

    @property
    def grid(self) -> int:
        """The descriptor lattice side over the evaluated view."""
        return int(self.spec.grid or 48)

    @property
    def parts(self) -> str | None:
        """The NMF parts file (the ``nmf`` source and the parts view)."""
        return self.spec.parts

    @property
    def backbone(self) -> str:
        """The backbone of the ResNet sources (or a DVE run)."""
        return self.spec.backbone

    @property
    def arch(self) -> str:
        """The ResNet architecture."""
        return self.spec.arch

    def dve_run(self) -> str | None:
        """The DVE run the ``dve`` source reads (``--dve``, else a DVE ``--backbone``)."""
        return self.dve or (self.spec.weights if is_dve_weights(self.spec.weights) else None)

    def source_spec(self, source: str) -> FeatureSpec:
        """The :class:`FeatureSpec` of one exported source at the page's grid."""
        if source == "dve":
            return FeatureSpec(source="dve", backbone=self.dve_run(), grid=self.grid)
        return replace(self.spec, source=source, grid=self.grid, readout=self.spec.readout or "output")

    def check(self) -> None:
        """Raise :class:`InputError` for a backbone that is not a run and for impossible combinations."""
        check_run(self.spec.weights, "--backbone")
        if self.dve is not None:
            check_run(self.dve, "--dve")
            if not is_dve_weights(self.dve):
                raise InputError("not a DVE run (no descriptor.safetensors with DVE metadata)", self.dve)
        unknown = [s for s in self.sources if s not in SOURCES]
        if unknown or not self.sources:
            raise InputError(f"unknown --source {','.join(unknown) or '(empty)'}; choose from {', '.join(SOURCES)}")
        resnet = [s for s in self.sources if s != "dve"]
        if resnet and is_dve_weights(self.spec.weights):
            raise InputError(f"--source {','.join(resnet)} needs a ResNet --backbone; {self.backbone} is a DVE run")
        if "dve" in self.sources and self.dve_run() is None:
            raise InputError("--source dve needs a DVE run: --backbone DVE_RUN or --dve DVE_RUN")
        if "projected" in self.sources and not self.spec.projector:
            raise InputError("--source projected needs --projector RUN_OR_CHECKPOINT (from equinv project)")
        if "nmf" in self.sources and not self.parts:
            raise InputError("--source nmf needs --parts FILE (from equinv parts --method nmf)")
        if self.parts and is_dve_weights(self.spec.weights):
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
    src = build_source(feats.source_spec(source), device)
    out = []
    for images, pre, kind in groups:
        stats = src.spec.stats or src.stats or stats_for_kind(kind)
        out.append(describe(images, src, feats.grid, stats=stats, pre=pre, device=device, batch=batch).cpu())
    return torch.cat(out)


@torch.no_grad()
def part_maps(groups: Sequence[tuple[Tensor, object, str]], feats: Features,
              device="cpu") -> tuple[Tensor, Tensor, int]:
    """NMF part labels ``(B, S, S)`` int64, their strength ``(B, S, S)`` in [0, 1] (the winning
    coefficient over its fitted range, as ``equinv parts`` draws them), on the CPU, and the number of parts."""
    from equinv.evaluate.parts import part_coefficients, part_labels

    src = build_source(feats.source_spec("nmf"), device)
    model, hc = src.parts, src.hypercolumn
    labels, strength = [], []
    for images, pre, kind in groups:
        stats = feats.spec.stats or stats_for_kind(kind)
        c = part_coefficients(model, hc, images, pre=pre, stats=stats, size=feats.grid, device=device)
        labels.append(part_labels(c))
        strength.append(model.scaled(c.to(model.lo.device)).amax(1).cpu())
    return torch.cat(labels), torch.cat(strength), model.dim


def describe_source(feats: Features, source: str) -> str:
    """One line saying what a source is, for the page."""
    if source == "dve":
        return f"DVE descriptors of {feats.dve_run()}"
    spec = feats.spec
    base = f"{spec.arch} hypercolumn (taps {','.join(spec.hypercolumn_taps)}) of {spec.backbone}"
    if source == "projected":
        return f"projector {spec.projector} over the {base}"
    if source == "nmf":
        return f"NMF coefficients ({spec.parts}) of the {base}"
    return f"{base}, each layer L2-normalised"
