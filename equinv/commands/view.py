"""``equinv view``: an interactive correspondence, parts and predictions viewer as a static page.

Example::

    equinv view --backbone runs/celeba_r18 --reference "celeba:../shared/data/celeba?split=mafl_test#3" \
        --targets "celeba:../shared/data/celeba?split=mafl_test" --out runs/view
    equinv view --predictions runs/predict/predictions.json --out runs/view_pred --serve 8000

writes ``OUT/index.html`` with its scripts and data files (works from ``file://``; nothing is fetched from
the network); ``--serve PORT`` then serves it on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from equinv.commands.options import add_device_arg, add_feature_args, feature_spec, nonneg_int, port, positive_int
from equinv.errors import InputError
from equinv.outputs import check_dir, check_file


def features_from_args(args: argparse.Namespace):
    """:class:`~equinv.view.descriptors.Features` of the parsed flags (checked)."""
    from equinv.models.dve import is_dve_weights
    from equinv.view.descriptors import Features

    sources = list(args.source or (["dve"] if is_dve_weights(args.backbone) else ["hypercolumn"]))
    if args.dve and "dve" not in sources:
        sources.append("dve")
    spec = feature_spec(args, source="hypercolumn", grid=args.grid or 48)
    feats = Features(spec=spec, sources=tuple(sources), dve=args.dve)
    feats.check()
    return feats


def run_view(args: argparse.Namespace) -> tuple[Path, dict]:
    """Write the page; returns ``OUT/index.html`` and the page's description (``data/meta.js`` without colours)."""
    from equinv.data.dataset import open_dataset
    from equinv.data.spec import split_index
    from equinv.evaluate.protocol import pick_device
    from equinv.view import codec
    from equinv.view.page import write_page

    if not args.reference and not args.predictions:
        raise InputError("give --reference SPEC#i (correspondence and parts) and/or --predictions FILE.json")
    out = check_dir(args.out)
    meta, data, images = {}, {}, {}
    if args.reference:
        from equinv.view import correspondence

        feats = features_from_args(args)
        ref_spec, ref_i = split_index(args.reference)
        targets = args.targets or ref_spec
        rds = open_dataset(ref_spec, progress=not args.quiet)
        tds = open_dataset(targets, progress=not args.quiet)
        c = correspondence.build(rds, ref_i, tds, feats, limit=args.limit, max_dim=args.max_dim,
                                 device=pick_device(args.device), specs=(ref_spec, targets))
        meta.update(backbone=feats.backbone, arch=None if feats.sources == ("dve",) else feats.arch,
                    correspondence=c.meta)
        images.update({im["file"]: arr for im, arr in zip(c.meta["images"], c.images, strict=True)})
        data.update({f"desc_{name}": codec.encode(q) for name, q in c.descriptors.items()})
        if c.parts is not None:
            data["parts"] = {"labels": codec.encode_uint8(c.parts[0]), "strength": codec.encode_uint8(c.parts[1])}
    elif args.parts or args.targets:
        raise InputError("--targets and --parts need --reference SPEC#i")
    if args.predictions:
        from equinv.view import predictions

        payload, files = predictions.build(args.predictions, limit=args.limit)
        data["predictions"] = payload
        images.update(files)
        meta["predictions"] = {"file": "data/predictions.js", "source": str(args.predictions)}
    return write_page(out, meta, data, images), meta


def run(args: argparse.Namespace) -> int:
    """Write the page (and a screenshot); serve it with --serve."""
    from equinv.view import serve

    if args.screenshot:  # written last, after all the work: checked first
        check_file(args.screenshot, "--screenshot", suffixes=(".png",))
    server = serve.bind(args.out, args.serve) if args.serve is not None else None  # refuse a busy port first
    try:
        index, meta = run_view(args)
        for s in (meta.get("correspondence") or {}).get("sources", []):
            same, total = s["agreement"]
            pca = f"{s['in_dim']} -> {s['dim']} dims by PCA (keeps {100 * s['pca_energy']:.1f} % of the energy)" \
                if s["dim"] < s["in_dim"] else f"{s['dim']} dims"
            print(f"{s['name']}: {pca}; the stored descriptors give the full-precision match on {same} / {total} "
                  "reference-landmark transfers")
        size = sum(f.stat().st_size for f in Path(args.out).rglob("*") if f.is_file())
        print(f"wrote {index} ({size / 2**20:.1f} MiB with its data; open it in a browser, no server needed)")
        if args.screenshot:
            from equinv.view.browser import screenshot

            print(f"wrote {screenshot(index, args.screenshot, landmark=args.screenshot_landmark)}")
        if server is not None:
            print(f"serving {serve.url(server)} (127.0.0.1 only); Ctrl-C stops")
            server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        if server is not None:
            server.server_close()
    return 0


def register(sub) -> None:
    """Add ``equinv view``."""
    p = sub.add_parser(
        "view",
        help="interactive correspondence / parts / predictions viewer: a static page (optionally served)",
        description="Writes OUT/index.html and its data files, a self-contained page (no network, works from "
        "file://). Correspondence: hover or click the reference, every target shows its nearest-neighbour match "
        "and the similarity map (the rule of equinv match, on the stored descriptors). Parts: NMF part maps "
        "(--parts). Predictions: an equinv predict output (--predictions), worst first.",
        epilog="Example: equinv view --backbone runs/celeba_r18 --reference 'celeba:../shared/data/celeba?"
        "split=mafl_test#3' --targets 'celeba:../shared/data/celeba?split=mafl_test' --out runs/view",
    )
    add_feature_args(p, grid="48 over the 96-px view", readout="output", several=True)
    p.add_argument("--dve", default=None, metavar="DVE_RUN", help="also export this DVE run's descriptors")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of a random trunk (default 0)")
    p.add_argument("--reference", default=None, metavar="KIND:PATH#INDEX",
                   help="dataset of the reference image, '#N' picks image N (default 0)")
    p.add_argument("--targets", default=None, metavar="KIND:PATH",
                   help="dataset of the target images (default: the reference's dataset)")
    p.add_argument("--limit", type=positive_int, default=24, help="first N targets; worst N predictions (default 24)")
    p.add_argument("--max-dim", type=positive_int, default=64,
                   help="descriptors with more channels are reduced to this many by PCA (default 64)")
    p.add_argument("--predictions", default=None, metavar="FILE.json", help="an equinv predict output to browse")
    p.add_argument("--out", default="runs/view", help="output folder (default runs/view)")
    p.add_argument("--serve", type=port, default=None, metavar="PORT",
                   help="then serve OUT on http://127.0.0.1:PORT (0: any free port) until Ctrl-C")
    p.add_argument("--screenshot", default=None, metavar="PNG",
                   help="then save a screenshot of the correspondence view (needs playwright and Chromium)")
    p.add_argument("--screenshot-landmark", type=nonneg_int, default=0,
                   help="reference landmark clicked for it (default 0)")
    add_device_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=run)
