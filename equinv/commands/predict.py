"""``equinv predict``: landmarks of images, folders and dataset specs with a model from ``equinv fit``."""

from __future__ import annotations

import argparse

from equinv.commands.options import add_device_arg, nonneg_int, positive_int
from equinv.outputs import check_dir, check_file


def run(args: argparse.Namespace) -> int:
    """Predict and write the result file; print counts and the framing assumed."""
    from equinv.landmarks.model import load_model
    from equinv.landmarks.predict import PredictConfig, run_predict

    check_file(args.out, force=args.force, suffixes=(".json", ".csv"))  # before the model is read
    if args.overlay:
        check_dir(args.overlay, "--overlay")
    model = load_model(args.model, device=args.device or "cpu")
    f = model.meta["framing"]
    cfg = PredictConfig(inputs=list(args.inputs), out=args.out, boxes=args.boxes, overlay=args.overlay,
                        batch=args.batch, workers=args.workers, skip_bad=args.skip_bad, force=args.force,
                        confidence=not args.no_confidence, progress=not args.quiet)
    if not args.quiet:
        ext = f["landmark_extent"]
        print(f"framing: spec images by their protocol crop; plain images taken as the object crop (the whole image "
              f"is the view){'' if not args.boxes else ', --boxes framed by the ' + f['crop'] + ' rule'}; the "
              f"model was trained on {f['kind']} views framed by '{f['crop']}'"
              + (f", landmarks spanning {100 * ext:.0f}% of the view" if ext else ""))
    res = run_predict(model, args.model, cfg)
    print(f"{res['images']} images -> {res['out']}" + (f"; {res['skipped']} skipped (listed under errors)"
                                                       if res["skipped"] else ""))
    return 0


def register(sub) -> None:
    """Add ``equinv predict``."""
    p = sub.add_parser(
        "predict",
        help="put a fitted model's landmarks on images, folders and dataset specs (JSON / CSV, overlays)",
        description="Predict the landmarks of every input: image files, folders (searched recursively) and "
        "dataset specs KIND:PATH (their images framed by their protocol crop, as in training; their true points "
        "are written too). A plain image is taken as the object crop (the whole image becomes the model's view) "
        "unless --boxes gives the object's box. Output points are in each input image's own pixels: x right, y "
        "down, 0-based, pixel centres at integers; with a per-landmark confidence in (0, 1] from flip consistency "
        "(the mirrored image predicted too; 1 = both agree). Images stream through in batches (bounded memory).",
        epilog="Example: equinv predict models/faces photos/ --out landmarks.csv --overlay overlays/",
    )
    p.add_argument("model", metavar="MODEL_DIR", help="a model directory written by equinv fit")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, or KIND:PATH specs")
    p.add_argument("--out", required=True, metavar="FILE", help="FILE.json or FILE.csv")
    p.add_argument("--boxes", default=None, metavar="CSV",
                   help="object boxes: CSV rows path,x0,y0,x1,y1 (pixels; paths relative to the CSV's folder)")
    p.add_argument("--overlay", default=None, metavar="DIR", help="also draw the points on each image into DIR")
    p.add_argument("--batch", type=positive_int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--workers", type=nonneg_int, default=0, help="image-decoding worker processes (default 0)")
    p.add_argument("--skip-bad", action="store_true",
                   help="list unreadable images under 'errors' in the output and go on (default: stop)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--no-confidence", action="store_true",
                   help="skip the confidences and the second (mirrored) network pass they cost: about twice as fast")
    add_device_arg(p, "cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=run)
