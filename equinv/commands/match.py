"""``equinv match``: transfer a reference image's landmarks to target images by nearest neighbour.

Example::

    equinv match --backbone runs/celeba_r18 --arch resnet18 \
        --reference "celeba:../shared/data/celeba?split=mafl_test#3" \
        --targets "celeba:../shared/data/celeba?split=mafl_test" --max-targets 16 --out runs/match

writes ``OUT/matches.json`` (per target: predicted landmarks in the 96 frame and in the target's own
input-image pixels; errors where the targets are labelled) and ``OUT/matches.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from equinv.errors import InputError

ARCHES = ["resnet18", "resnet34", "resnet50", "resnet50_half"]


# -- shared with `equinv parts` --------------------------------------------------------------------------


def pick_device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_hypercolumn(backbone: str | None, arch: str, layer: int = 4, size: int = 96, seed: int = 0,
                      device: torch.device | str = "cpu"):
    """Frozen trunk (``random``/None, a pretraining run dir or a weights file) → Hypercolumn on ``device``."""
    from equinv.models.hypercolumn import Hypercolumn, frozen_trunk, reference_taps

    weights = None if backbone in (None, "", "random") else backbone
    if weights is not None and not Path(weights).exists():
        raise InputError("backbone weights not found (give a run dir, a weights file or 'random')", weights)
    try:
        taps = reference_taps(layer)
    except ValueError as e:
        raise InputError(str(e)) from None
    trunk = frozen_trunk(arch, weights, seed=seed)
    return Hypercolumn(trunk, taps, size=size).to(device).eval()


def open_dataset(spec: str, size: int = 96, progress: bool = False):
    """A prepared :class:`LandmarkDataset` of ``spec`` (canvases cached)."""
    from equinv.data.dataset import LandmarkDataset
    from equinv.data.preprocess import Preprocess
    from equinv.data.spec import read_index

    ds = LandmarkDataset(read_index(spec), Preprocess(size=size))
    ds.prepare(progress=progress)
    if len(ds) == 0:
        raise InputError(f"no usable images in {spec}")
    return ds


def split_index(text: str) -> tuple[str, int]:
    """``SPEC#N`` → (SPEC, N); no ``#N`` suffix → (SPEC, 0)."""
    head, sep, tail = text.rpartition("#")
    if sep and tail.strip().lstrip("-").isdigit():
        return head, int(tail)
    return text, 0


def canvas_to_source(p: np.ndarray, box, canvas: int) -> np.ndarray:
    """Canvas pixels → source-image pixels through the crop box ``(x0, y0, x1, y1)`` (pixel edges)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    out = np.empty_like(p, dtype=np.float64)
    out[..., 0] = x0 + (p[..., 0] + 0.5) * (x1 - x0) / canvas - 0.5
    out[..., 1] = y0 + (p[..., 1] + 0.5) * (y1 - y0) / canvas - 0.5
    return out


def source_to_canvas(s: np.ndarray, box, canvas: int) -> np.ndarray:
    x0, y0, x1, y1 = (float(v) for v in box)
    out = np.empty_like(s, dtype=np.float64)
    out[..., 0] = (s[..., 0] + 0.5 - x0) * canvas / (x1 - x0) - 0.5
    out[..., 1] = (s[..., 1] + 0.5 - y0) * canvas / (y1 - y0) - 0.5
    return out


def parse_points(text: str) -> np.ndarray:
    """``"x,y;x,y;..."`` → ``(K, 2)``."""
    try:
        pts = [[float(v) for v in item.split(",")] for item in text.replace(" ", "").split(";") if item]
        arr = np.asarray(pts, np.float64)
    except ValueError:
        arr = np.zeros((0, 3))
    if arr.ndim != 2 or arr.shape[1] != 2 or not len(arr):
        raise InputError(f"--points must look like 'x,y;x,y;...', got {text!r}")
    return arr


def _r(a: np.ndarray) -> list:
    return np.round(np.asarray(a, np.float64), 3).tolist()


# -- the command ------------------------------------------------------------------------------------------


def run_match(args: argparse.Namespace) -> dict:
    from equinv.evaluate.descriptors import DescriptorSpec, describe, load_projector, stats_for_kind
    from equinv.evaluate.parts import PartsModel
    from equinv.evaluate.transfer import transfer_landmarks
    from equinv.viz.maps import match_figure

    out = Path(args.out)
    dev = pick_device(args.device)
    ref_spec, ref_i = split_index(args.reference)
    rds = open_dataset(ref_spec, args.size, progress=not args.quiet)
    if not 0 <= ref_i < len(rds):
        raise InputError(f"reference index {ref_i} out of range: {ref_spec} has {len(rds)} images")
    tds = open_dataset(args.targets, args.size, progress=not args.quiet)
    pre = rds.pre
    rb = rds.__getitems__([ref_i])
    rj = int(rb["index"][0])
    m, s = pre.margin, pre.size
    if args.points:
        pts_src = parse_points(args.points)
        ref_lm = source_to_canvas(pts_src, rds.boxes[rj], pre.canvas) - m
        ref_vis = np.ones(len(ref_lm), bool)
        names = [f"p{k}" for k in range(len(ref_lm))]
    else:
        ref_lm = rb["landmarks"][0].numpy().astype(np.float64) - m
        ref_vis = rb["visible"][0].numpy().astype(bool)
        names = list(rds.names)
        if not ref_vis.any():
            raise InputError(f"reference image {ref_i} of {ref_spec} has no landmarks; give --points x,y;x,y")

    n_t = len(tds) if args.max_targets is None else min(len(tds), args.max_targets)
    tb = tds.__getitems__(list(range(n_t)))
    stats = args.stats or stats_for_kind(tds.index.kind)
    grid = args.grid or s
    kind = "projected" if args.projector else ("nmf" if args.parts else "hypercolumn")
    spec = DescriptorSpec(kind, grid, layerwise=not args.whole_norm, stats=stats)
    hc = build_hypercolumn(args.backbone, args.arch, args.layer, grid, args.seed, dev)
    projector = load_projector(args.projector, dev) if args.projector else None
    parts = PartsModel.load(args.parts).to(dev) if args.parts else None
    rdesc = describe(rb["image"], hc, spec, projector=projector, parts=parts, pre=rds.pre, device=dev)
    tdesc = describe(tb["image"], hc, spec, projector=projector, parts=parts, pre=tds.pre, device=dev,
                     batch=args.batch)
    pred, score = transfer_landmarks(rdesc[0], torch.from_numpy(ref_lm).float(), tdesc, image_size=s,
                                     soft=args.soft, return_scores=True)
    pred, score = pred.cpu().numpy().astype(np.float64), score.cpu().numpy()

    labelled = (not args.points and tuple(tds.names) == tuple(rds.names) and bool(tb["visible"].any()))
    tm = tds.pre.margin
    targets, errs, errs70 = [], [], []
    for i in range(n_t):
        j = int(tb["index"][i])
        rec = tds.index.records[j]
        entry = {
            "index": i,
            "path": str(rec.path),
            "landmarks_96": _r(pred[i]),
            "landmarks_image": _r(canvas_to_source(pred[i] + tm, tds.boxes[j], tds.pre.canvas)),
            "score": _r(score[i]),
        }
        if labelled:
            true = tb["landmarks"][i].numpy().astype(np.float64) - tm
            ok = tb["visible"][i].numpy().astype(bool) & ref_vis
            d = np.linalg.norm(pred[i] - true, axis=-1)
            d70 = d * 69.0 / (s - 1)
            entry["true_96"] = _r(true)
            entry["error_96"] = [round(float(v), 3) if o else None for v, o in zip(d, ok, strict=True)]
            entry["mean_error_96"] = round(float(d[ok].mean()), 4) if ok.any() else None
            errs.append(d[ok])
            errs70.append(d70[ok])
        targets.append(entry)
    result = {
        "backbone": args.backbone or "random",
        "arch": args.arch,
        "descriptor": spec.as_dict() | {"layer": args.layer, "soft": bool(args.soft)},
        "names": names,
        "frame": f"landmarks_96: pixels of the {s}x{s} evaluated view; landmarks_image: pixels of each input image",
        "reference": {
            "spec": ref_spec,
            "index": ref_i,
            "path": str(rds.index.records[rj].path),
            "landmarks_96": _r(ref_lm),
            "landmarks_image": _r(canvas_to_source(ref_lm + m, rds.boxes[rj], pre.canvas)),
            "visible": ref_vis.tolist(),
        },
        "targets_spec": args.targets,
        "targets": targets,
    }
    if labelled and errs:
        allv, all70 = np.concatenate(errs), np.concatenate(errs70)
        result["summary"] = {"n_targets": n_t, "n_points": int(allv.size),
                             "mean_error_96": float(allv.mean()) if allv.size else None,
                             "mean_error_dve70": float(all70.mean()) if all70.size else None}
    out.mkdir(parents=True, exist_ok=True)
    (out / "matches.json").write_text(json.dumps(result, indent=1) + "\n")
    nf = min(n_t, args.n_figure)
    rimg = rb["image"][0][:, m : m + s, m : m + s]
    timgs = tb["image"][:nf, :, tm : tm + s, tm : tm + s]
    truth = tvis = None
    if labelled:
        truth = tb["landmarks"][:nf].numpy() - tm
        tvis = tb["visible"][:nf].numpy()
    cap = [f"#{i} {t['mean_error_96']:.1f}px" if t.get("mean_error_96") is not None else f"#{i}"
           for i, t in enumerate(targets[:nf])]
    match_figure(rimg, ref_lm, timgs, pred[:nf], out / "matches.png", truth=truth, truth_visible=tvis,
                 ref_visible=ref_vis, cell=args.cell, cols=args.cols, labels=cap)
    return result


def cmd_match(args: argparse.Namespace) -> int:
    res = run_match(args)
    out = Path(args.out)
    line = f"{len(res['targets'])} targets -> {out / 'matches.json'}, {out / 'matches.png'}"
    if "summary" in res:
        sm = res["summary"]
        line += f"; mean error {sm['mean_error_96']:.2f} px (96 frame), {sm['mean_error_dve70']:.2f} (70-px frame)"
    print(line)
    return 0


def add_backbone_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default="random", help="pretraining run dir, weights file, or 'random' (default)")
    p.add_argument("--arch", choices=ARCHES, default="resnet18", help="trunk architecture (default resnet18)")
    p.add_argument("--layer", type=int, default=4, help="hypercolumn depth (reference --layer; default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of a random trunk (and of sampling)")
    p.add_argument("--size", type=int, default=96, help="evaluated image side (default 96)")
    p.add_argument("--stats", choices=["face", "imagenet"], default=None,
                   help="input normalisation (default: imagenet for cub/folder data, else face)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(sub) -> None:
    p = sub.add_parser(
        "match",
        help="transfer landmarks of a reference image to targets by nearest neighbour (JSON + PNG)",
        description="Hard nearest neighbour in descriptor space (protocol.md §5a): the reference descriptor at "
        "each landmark (rounded to the grid) is compared by cosine with every target pixel, the argmax is the "
        "prediction (--soft refines it by a local soft-argmax). Descriptors: the hypercolumn at 96x96 with "
        "per-layer L2 normalisation, or a trained projector (--projector), or NMF coefficients (--parts). "
        "Errors are reported when the targets carry the reference's landmarks.",
        epilog="Example: equinv match --backbone runs/celeba_r18 --reference 'celeba:../shared/data/celeba?"
        "split=mafl_test#0' --targets 'celeba:../shared/data/celeba?split=mafl_test' --max-targets 16 "
        "--out runs/match",
    )
    add_backbone_args(p)
    p.add_argument("--reference", required=True, metavar="KIND:PATH[#INDEX]",
                   help="dataset of the reference image, '#N' picks image N (default 0)")
    p.add_argument("--targets", required=True, metavar="KIND:PATH", help="dataset of the target images")
    p.add_argument("--points", default=None, metavar="X,Y;X,Y",
                   help="reference points in the reference's input-image pixels (instead of its landmarks)")
    p.add_argument("--max-targets", type=int, default=32, help="first N targets (default 32)")
    p.add_argument("--projector", default=None, help="projector run dir or .safetensors: projected descriptors")
    p.add_argument("--parts", default=None, help="NMF parts model (.safetensors from `equinv parts`): NMF descriptors")
    p.add_argument("--grid", type=int, default=None, help="descriptor grid side (default: the image side, 96)")
    p.add_argument("--whole-norm", action="store_true",
                   help="normalise the hypercolumn as a whole instead of per layer")
    p.add_argument("--soft", action="store_true", help="soft-argmax refinement around the hard argmax")
    p.add_argument("--batch", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--n-figure", type=int, default=15, help="targets shown in matches.png (default 15)")
    p.add_argument("--cell", type=int, default=128, help="figure cell side in px (default 128)")
    p.add_argument("--cols", type=int, default=4, help="figure columns (default 4)")
    p.add_argument("--out", default="runs/match", help="output folder (default runs/match)")
    p.set_defaults(fn=cmd_match)
