"""The description of a feature source: one small frozen dataclass that every consumer records.

A :class:`FeatureSpec` says which network gives features and how they are read: the backbone (a
pretraining run, a weights file, or the seeded random initialisation), its architecture, the hypercolumn
taps, the grid, the kind of source (raw hypercolumn, a trained projector over it, NMF part coefficients, or
a DVE descriptor network) and the input statistics. Commands build it from one set of flags
(``equinv.commands.options``), feature caches key on it, run records and saved landmark models store its
:meth:`~FeatureSpec.as_dict`; :func:`equinv.features.sources.build_source` is its one constructor.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from equinv import precision as precision_lib
from equinv.errors import InputError
from equinv.features.stats import INPUT_STATS
from equinv.models.backbones import ARCHS, TAP_NAMES
from equinv.models.hypercolumn import reference_taps

SOURCE_KINDS = ("hypercolumn", "projected", "nmf", "dve")
#: How a projected source is read: before the reference projector's spatial softmax, or its output.
READOUTS = ("linear", "output")
RANDOM = "random"
#: Paper / ResNet block names accepted for taps besides torchvision's.
TAP_ALIASES = {"pool": "maxpool", "conv1": "maxpool", "conv2": "layer1", "conv3": "layer2", "conv4": "layer3",
               "conv5": "layer4", "conv2_x": "layer1", "conv3_x": "layer2", "conv4_x": "layer3",
               "conv5_x": "layer4"}


def parse_taps(text: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...] | None:
    """``"layer3"`` / ``"conv4,conv5"`` / a list → torchvision tap names (order kept); empty → ``None``."""
    if text is None or text == "" or text == [] or text == ():
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


def _weights(backbone: str | Path | None) -> str | None:
    return None if backbone in (None, "", RANDOM, "none") else str(backbone)


@dataclass(frozen=True)
class FeatureSpec:
    """Which network gives features, and how they are read.

    Attributes:
        source: ``hypercolumn`` | ``projected`` (needs ``projector``) | ``nmf`` (needs ``parts``) | ``dve``
            (``backbone`` is a DVE run; also chosen by :meth:`resolved` when it is one).
        backbone: a pretraining run dir, a weights file (ours, torchvision's, a MoCo/DDP checkpoint), a DVE
            run, or ``random`` (the random initialisation drawn with ``seed``).
        arch: ResNet architecture (``resnet18`` ...); ignored for DVE.
        layers: the reference's ``--layer N``: the first N taps deepest first (conv5, conv4, conv3, conv2, pool).
        taps: explicit taps instead of ``layers`` (e.g. ``("layer3",)``, a single layer of Table 3).
        projector: ``equinv project`` run or checkpoint (``projected``).
        parts: NMF parts file from ``equinv parts --method nmf`` (``nmf``).
        readout: ``projected`` only: ``linear`` (``wᵀΦ + b``, before the spatial softmax) or ``output``
            (what the projector outputs); ``None``: the consumer's default (regression reads ``linear``,
            matching ``output``).
        grid: side of the feature grid; ``None``: the consumer's default (48 for regression, 96 for matching).
        seed: seed of the random initialisation (``backbone`` ``random``).
        stats: input statistics (``face`` | ``imagenet``); ``None``: the source's own, else by dataset kind.
        precision: compute precision of the network pass (``fp32`` | ``bf16``, :mod:`equinv.precision`); the
            features themselves are float32 either way. Left out of :meth:`as_dict` when ``fp32``, so records
            and caches made before it existed keep their identity.
        channels_last: NHWC activations in the network pass (implied by ``bf16``; fp32 results differ from the
            contiguous layout's by float rounding only). Left out of :meth:`as_dict` when ``False``.
    """

    source: str = "hypercolumn"
    backbone: str = RANDOM
    arch: str = "resnet18"
    layers: int = 4
    taps: tuple[str, ...] | None = None
    projector: str | None = None
    parts: str | None = None
    readout: str | None = None
    grid: int | None = None
    seed: int = 0
    stats: str | None = None
    precision: str = precision_lib.DEFAULT
    channels_last: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "backbone", _weights(self.backbone) or RANDOM)
        set_(self, "taps", parse_taps(self.taps))
        if self.source not in SOURCE_KINDS:
            raise InputError(f"unknown feature source {self.source!r}; choose from {', '.join(SOURCE_KINDS)}")
        if self.arch not in ARCHS:
            raise InputError(f"unknown architecture {self.arch!r}; choose from {', '.join(ARCHS)}")
        if not 1 <= int(self.layers) <= 5:
            raise InputError(f"--layers must be 1..5, got {self.layers}")
        if self.grid is not None and int(self.grid) < 1:
            raise InputError(f"--grid must be positive, got {self.grid}")
        if self.readout is not None and self.readout not in READOUTS:
            raise InputError(f"unknown projector readout {self.readout!r}; choose from {', '.join(READOUTS)}")
        if self.precision not in precision_lib.PRECISIONS:
            raise InputError(f"unknown precision {self.precision!r}; choose from {', '.join(precision_lib.PRECISIONS)}")
        if self.stats is not None and self.stats not in INPUT_STATS:
            raise InputError(f"unknown input statistics {self.stats!r}; choose from {', '.join(INPUT_STATS)}")

    # -- derived ------------------------------------------------------------------------------------------
    @property
    def weights(self) -> str | None:
        """The backbone as a path, or ``None`` for the random initialisation."""
        return _weights(self.backbone)

    @property
    def hypercolumn_taps(self) -> tuple[str, ...]:
        """The trunk taps in stacking order (``taps``, or the reference's first ``layers`` deepest first)."""
        return self.taps if self.taps else reference_taps(int(self.layers))

    def resolved(self) -> FeatureSpec:
        """The spec with ``source="dve"`` when the backbone is a DVE run or weights file."""
        from equinv.models.dve import is_dve_weights

        if self.source != "dve" and is_dve_weights(self.weights):
            return replace(self, source="dve")
        return self

    def with_defaults(self, *, grid: int | None = None, readout: str | None = None) -> FeatureSpec:
        """Fill an unset ``grid`` / ``readout`` with a consumer's default."""
        return replace(self, grid=self.grid if self.grid is not None else grid,
                       readout=self.readout if self.readout is not None else readout)

    # -- records --------------------------------------------------------------------------------------------
    def as_dict(self) -> dict:
        """A JSON-ready dict (``taps`` as a list); :meth:`from_dict` reads it back."""
        d = asdict(self)
        d["taps"] = list(self.taps) if self.taps else None
        if d["precision"] == precision_lib.DEFAULT:
            del d["precision"]
        if not d["channels_last"]:
            del d["channels_last"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        """The spec recorded by :meth:`as_dict` (an unknown key is an error: a newer format)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown feature-source fields {unknown} (written by a newer equinv?)")
        return cls(**d)

    def identity(self) -> str:
        """A string that changes whenever the features could: paths resolved, the weight files' sizes and
        modification times included (a run made again in the same directory is not the same source)."""
        d = self.as_dict()
        for k in ("backbone", "projector", "parts"):
            v = d[k] if k != "backbone" else self.weights
            if v:
                d[k] = [str(Path(v).resolve()), *_stamp(Path(v))]
        return json.dumps(d, sort_keys=True)


#: The weight file a run directory is read through, per kind of run.
_RUN_FILES = ("backbone.safetensors", "descriptor.safetensors", "checkpoints/best.safetensors", "parts.safetensors")


def _stamp(path: Path) -> list:
    """``[size, mtime_ns]`` of the weights behind ``path`` (a file, or the known file of a run directory)."""
    if path.is_dir():
        path = next((path / f for f in _RUN_FILES if (path / f).is_file()), path)
    try:
        st = path.stat()
    except OSError:
        return [None, None]
    return [st.st_size, st.st_mtime_ns]
