"""Option types and flag groups shared by every command (one spelling, one check, one help text).

* value types (:func:`positive_int`, :func:`finite_float`, ...): a bad value is argparse's one-line
  ``equinv COMMAND: error: argument --x: ...`` before any work starts;
* :func:`add_feature_args` / :func:`feature_spec`: the feature-source flags of every command that reads
  features (``--backbone --arch --layers --taps --source --projector --parts --proj-readout --grid --stats``),
  giving a :class:`~equinv.features.spec.FeatureSpec`;
* old spellings (``--layer``, ``--descriptor``, a command's ``--size`` that meant the grid or the image side)
  are accepted for one release with a deprecation warning (:class:`Deprecated`).
"""

from __future__ import annotations

import argparse
import math
import sys

#: Shown with every dataset option.
SPEC_HELP = "dataset as KIND:PATH[?key=value&...]; `equinv data kinds` lists kinds and options"
#: ResNet trunks (equinv.models.backbones.ARCHS; kept here so that parsing does not import torch).
ARCH_NAMES = ("resnet18", "resnet34", "resnet50", "resnet50_half")
#: DVE descriptor networks (equinv.models.dve.ARCHS).
DVE_ARCHS = ("smallnet", "hourglass")
SOURCE_KINDS = ("hypercolumn", "projected", "nmf", "dve")
#: TPS warp presets (equinv.augment.tps.PRESETS).
TPS_PRESETS = ("paper", "cl", "eval", "dve")
#: The release until which deprecated spellings are accepted.
UNTIL = "equinv 0.3"


# ----------------------------------------------------------------------------- value types
def _number(kind, text: str, what: str):
    try:
        v = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if kind is float and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return v


def positive_int(text: str) -> int:
    """An integer ≥ 1."""
    v = _number(int, text, "an integer")
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {v}")
    return v


def nonneg_int(text: str) -> int:
    """An integer ≥ 0."""
    v = _number(int, text, "an integer")
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {v}")
    return v


def finite_float(text: str) -> float:
    """Any finite number."""
    return _number(float, text, "a number")


def positive_float(text: str) -> float:
    """A finite number > 0."""
    v = _number(float, text, "a number")
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v:g}")
    return v


def nonneg_float(text: str) -> float:
    """A finite number ≥ 0."""
    v = _number(float, text, "a number")
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {v:g}")
    return v


def probability(text: str) -> float:
    """A number in [0, 1]."""
    v = _number(float, text, "a number")
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {v:g}")
    return v


def port(text: str) -> int:
    """A TCP port, 0 (any free port) to 65535."""
    v = _number(int, text, "an integer")
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number in 0..65535, got {v}")
    return v


def device(text: str) -> str:
    """A torch device this machine has (``cpu``, ``cuda``, ``cuda:N``, ``mps``); kept as the text given."""
    import torch  # only when --device is given: parsing alone stays light

    try:
        d = torch.device(text.strip())
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown device {text!r} (use cpu, cuda, cuda:N or mps)") from None
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available on this machine (use cpu)")
        n = torch.cuda.device_count()
        if d.index is not None and d.index >= n:
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {n} CUDA device(s), cuda:0..cuda:{n - 1}")
    elif d.type == "mps":
        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available on this machine (use cpu)")
    elif d.type != "cpu":
        raise argparse.ArgumentTypeError(f"unsupported device {text!r} (use cpu, cuda, cuda:N or mps)")
    return text.strip()


# ----------------------------------------------------------------------------- deprecated spellings
class Deprecated(argparse.Action):
    """An old spelling of an option: stores into the new option's ``dest`` and warns once on stderr."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        kwargs.setdefault("help", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"equinv: warning: {option_string} is deprecated, use {self.new} (accepted until {UNTIL})",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def deprecated(p, old: str, new: str, dest: str, **kwargs) -> None:
    """Accept ``old`` as a deprecated spelling of ``new`` (same ``dest``, same type)."""
    p.add_argument(old, dest=dest, action=Deprecated, new=new, **kwargs)


# ----------------------------------------------------------------------------- flag groups
def source_list(text: str) -> tuple[str, ...]:
    """``"hypercolumn,dve"`` → the kinds, checked (``--source`` of commands that show several sources)."""
    kinds = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    bad = [k for k in kinds if k not in SOURCE_KINDS]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(f"unknown source {','.join(bad) or '(empty)'}; choose from "
                                         f"{', '.join(SOURCE_KINDS)}")
    return kinds


def add_feature_args(p: argparse.ArgumentParser, *, grid: str = "48", sources=SOURCE_KINDS,
                     readout: str = "linear for regression, output for matching", dve: bool = True,
                     several: bool = False) -> None:
    """The feature-source flags (see :class:`~equinv.features.spec.FeatureSpec`).

    ``grid`` names the command's default grid in the help; ``sources`` restricts ``--source``; ``several``
    makes ``--source`` a comma list (a command that shows several sources side by side).
    """
    g = p.add_argument_group("features (what network gives features, and how they are read)")
    g.add_argument("--backbone", default="random", metavar="RUN|WEIGHTS|random",
                   help="pretraining run dir, weights file (ours, torchvision's e.g. ImageNet, a MoCo/DDP checkpoint)"
                   + (", DVE run" if dve else "") + ", or 'random' (default: the seeded random initialisation)")
    g.add_argument("--arch", choices=ARCH_NAMES, default="resnet18", help="ResNet trunk (default resnet18)")
    g.add_argument("--layers", type=positive_int, default=4, metavar="N",
                   help="hypercolumn depth, the reference's --layer: the first N of conv5, conv4, conv3, conv2, "
                   "pool (default 4)")
    g.add_argument("--taps", default=None, metavar="TAP[,TAP]",
                   help="explicit taps instead of --layers, e.g. conv4 (one layer, Table 3) or conv5,conv4")
    what = ("hypercolumn (default), projected (--projector), nmf (--parts)"
            + (", dve (--backbone DVE_RUN; also implied by it)" if "dve" in sources else ""))
    if several:
        g.add_argument("--source", type=source_list, default=None, metavar="KIND[,KIND...]",
                       help=f"the sources to show, comma-separated: {what}")
    else:
        g.add_argument("--source", choices=sources, default="hypercolumn", help=what)
    g.add_argument("--projector", default=None, metavar="RUN|FILE",
                   help="equinv project run or checkpoint (--source projected)")
    g.add_argument("--parts", default=None, metavar="FILE", help="NMF parts file from equinv parts (--source nmf)")
    g.add_argument("--proj-readout", dest="readout", choices=("linear", "output"), default=None,
                   help="--source projected: read the projection w'Φ + b before the reference projector's spatial "
                   f"softmax ('linear') or the softmax maps it outputs ('output'); default: {readout}")
    g.add_argument("--grid", type=positive_int, default=None, metavar="S", help=f"feature grid side (default {grid})")
    g.add_argument("--stats", choices=("face", "imagenet"), default=None,
                   help="input normalisation (default: the source's own, else imagenet for cub/folder/coco data, "
                   "face otherwise)")
    add_precision_arg(g, "the network pass that computes the features")
    deprecated(g, "--layer", "--layers", "layers", type=positive_int)
    if not several:
        deprecated(g, "--descriptor", "--source", "source", choices=sources)


def feature_spec(args: argparse.Namespace, **changes):
    """The :class:`~equinv.features.spec.FeatureSpec` of parsed feature flags (``--seed`` seeds a random trunk)."""
    from equinv.features.spec import FeatureSpec

    values = dict(source=args.source, backbone=args.backbone, arch=args.arch, layers=args.layers, taps=args.taps,
                  projector=args.projector, parts=args.parts, readout=args.readout, grid=args.grid,
                  seed=getattr(args, "seed", 0) or 0, stats=args.stats,
                  precision=getattr(args, "precision", None) or "fp32",
                  channels_last=bool(getattr(args, "channels_last", None)))
    return FeatureSpec(**(values | changes))


def add_precision_arg(p, what: str) -> None:
    """``--precision fp32|bf16`` and ``--channels-last`` (``None`` = not given: fp32, contiguous) for ``what``."""
    p.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                   help=f"compute precision of {what}: fp32 (default, the reference's) or bf16 (autocast with "
                   "channels-last; faster only where the hardware has bf16 kernels: a recent GPU, a CPU with AVX-512 "
                   "BF16 or AMX; emulated and much slower elsewhere; losses, logits and weights stay fp32; "
                   "docs/precision.md)")
    p.add_argument("--channels-last", action="store_true", default=None,
                   help="NHWC activations (fp32 arithmetic; faster with oneDNN/cuDNN; implied by --precision bf16)")


def add_device_arg(p, default: str = "cuda if available, else cpu") -> None:
    """``--device``: checked to exist on this machine (``None`` = the command's default)."""
    p.add_argument("--device", type=device, default=None, metavar="DEVICE",
                   help=f"torch device: cpu, cuda, cuda:N or mps (default: {default})")


def add_run_args(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--quiet``."""
    add_device_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def n_train_list(text: str | None) -> list[int | None]:
    """``"1,5,all"`` → ``[1, 5, None]`` (``None``: all annotations); a bad item is a one-line argparse error."""
    if not text:
        return [None]
    out: list[int | None] = []
    for tok in (t.strip() for t in text.split(",")):
        out.append(None if tok in ("all", "") else positive_int(tok))
    return out


def n_train_arg(text: str) -> list[int | None]:
    """argparse type of ``--n-train``."""
    try:
        return n_train_list(text)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"{e} (use e.g. 1,5,10 or all)") from None
