"""Landmark-matching throughput and peak memory (protocol §5a), printed, never asserted.

For each image count (default 1,000 and 4,000 CelebA faces: 500 / 2,000 pairs, each pair one same-identity
and one different-identity match), each descriptor (the random ResNet18 hypercolumn, 960-D, and a randomly
initialised 256-D softmax projection of it) and each storage dtype of the held descriptors (float32, and
float16 / bfloat16), one child process runs :func:`equinv.evaluate.matching.match_errors` at 96² and reports

- pairs/s: pairs (A, B) matched per second of wall clock (decoding the images is done before and not counted),
- CPU s: user + system seconds of the process while matching,
- peak RSS: the child's maximum resident set size (the whole process: Python, torch, model, image cache),
- anon GB: the peak of its anonymous part (without the memory-mapped image cache's file pages, which grow with
  the number of images and which the kernel can drop),
- the same / different identity errors (70-px frame), to show that the storage dtype leaves them unchanged.

Before the table, one child decodes the images into the dataset's disk cache, so no timed child decodes.
The machine's load average is printed before and after: wall-clock figures on a shared machine are only
comparable under the same load (the CPU seconds are less sensitive to it).

``--quick`` keeps every 1,000-image row but runs the 4,000-image count for the first descriptor and storage
only (the memory-vs-size question), about a third of the full run's time.

``--materialised`` adds rows for the materialised path (each image's full ``D × 96²`` grid, ``--chunk`` images
at a time, the way matching worked before it was factorised) for comparison.

    python bench/match_throughput.py                              # the full table (about an hour on 2 loaded cores)
    python bench/match_throughput.py --quick                      # 4,000 images for hypercolumn/float32 only
    python bench/match_throughput.py --images 1000 --sources hypercolumn --storage float32 --materialised
    python bench/match_throughput.py --device cuda --batch 64
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

DATA = "celeba:../shared/data/celeba?split=not_mafl&holdout=1000&part=train"


def build(source: str, device):
    """The descriptor function of ``source`` (``hypercolumn`` or ``projected``: a random 256-D projector)."""
    import torch

    from equinv.features.descriptors import descriptor_fn
    from equinv.features.sources import ProjectedSource
    from equinv.models.hypercolumn import Hypercolumn, frozen_trunk
    from equinv.models.projector import Projector

    hc = Hypercolumn(frozen_trunk("resnet18", None, seed=0)).to(device).eval()
    if source == "hypercolumn":
        return descriptor_fn(hc, 96)
    torch.manual_seed(0)
    proj = Projector(hc.channels, dim=256).to(device).eval()
    return descriptor_fn(ProjectedSource(hc, proj, 96, "output"), 96)


def warm(data: str, images: int) -> None:
    """Decode the first ``images`` images of ``data`` into the dataset's disk cache (untimed)."""
    from equinv.data.dataset import LandmarkDataset
    from equinv.data.preprocess import Preprocess
    from equinv.data.spec import read_index

    LandmarkDataset(read_index(f"{data}&limit={images}"), Preprocess(size=96)).prepare(progress=False)


class AnonPeak:
    """Peak anonymous resident memory (``RssAnon`` of /proc/self/status, sampled every 20 ms by a thread).

    The maximum RSS also counts the pages of the memory-mapped image cache that the matching touched (file
    pages the kernel can drop at any time; they grow with the number of images matched); the anonymous
    part is what the process itself allocated (tensors, Python, torch).
    """

    def __init__(self):
        import threading

        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> int:
        try:
            with open("/proc/self/status") as f:
                return next((int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:")), 0)
        except OSError:
            return 0

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.now())

    def __enter__(self) -> AnonPeak:
        self.peak = self.now()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def child(cfg: dict) -> dict:
    """One configuration in this process: match, then report time, CPU time, the peak RSS and its anonymous part."""
    import torch

    from equinv.data.dataset import LandmarkDataset
    from equinv.data.preprocess import Preprocess
    from equinv.data.spec import read_index
    from equinv.evaluate.matching import match_errors
    from equinv.runtime import tune_allocator

    tune_allocator()  # as the CLI does
    dev = torch.device(cfg["device"])
    ds = LandmarkDataset(read_index(f"{cfg['data']}&limit={cfg['images']}"), Preprocess(size=96))
    ds.prepare(progress=False)
    fn = build(cfg["source"], dev)
    if cfg["path"] == "materialised":
        fn = fn.__call__  # a plain callable: no factorised form
    with AnonPeak() as anon:
        cpu0, t0 = time.process_time(), time.perf_counter()
        res = match_errors(fn, ds, n_pairs=cfg["images"] // 2, batch=cfg["batch"], device=dev, progress=False,
                           storage=getattr(torch, cfg["storage"]), chunk=cfg["chunk"])
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - t0
    return {**cfg, "seconds": seconds, "cpu_s": time.process_time() - cpu0,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "peak_anon_gb": anon.peak / 2**30,
            "same": res["match_error_same"], "diff": res["match_error_diff"], "n_pairs": res["n_pairs"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=DATA, help="labelled dataset spec (the first N images are matched)")
    ap.add_argument("--images", type=int, nargs="+", default=[1000, 4000])
    ap.add_argument("--sources", nargs="+", default=["hypercolumn", "projected"], choices=["hypercolumn", "projected"])
    ap.add_argument("--storage", nargs="+", default=["float32", "float16"],
                    choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--materialised", action="store_true", help="also time the materialised path (float32)")
    ap.add_argument("--batch", type=int, default=16, help="pairs per step (match_errors' batch)")
    ap.add_argument("--chunk", type=int, default=8, help="images per call on the materialised path")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true",
                    help="the largest image count for the first descriptor and storage only")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--warm", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(child(json.loads(args.one))))
        return
    if args.warm:
        warm(args.data, args.warm)
        return
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, device "
          f"{args.device}, data {args.data}")
    subprocess.run([sys.executable, __file__, "--data", args.data, "--warm", str(max(args.images))], check=True)
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'images':>6} {'descriptor':>11} {'path':>12} {'storage':>8} {'pairs/s':>8} {'wall s':>7} {'CPU s':>7} "
          f"{'peak RSS GB':>11} {'anon GB':>7} {'same':>7} {'diff':>7}")
    for n in args.images:
        for source in args.sources:
            runs = [("factorised", s) for s in args.storage]
            runs += [("materialised", "float32")] if args.materialised else []
            if args.quick and n == max(args.images) and len(args.images) > 1:
                runs = runs[:1] if source == args.sources[0] else []
            for path, storage in runs:
                cfg = {"data": args.data, "images": n, "source": source, "path": path, "storage": storage,
                       "batch": args.batch, "chunk": args.chunk, "device": args.device}
                out = subprocess.run([sys.executable, __file__, "--one", json.dumps(cfg)], capture_output=True,
                                     text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{n:>6} {source:>11} {path:>12} {storage:>8} {r['n_pairs'] / r['seconds']:>8.2f} "
                      f"{r['seconds']:>7.1f} {r['cpu_s']:>7.1f} {r['peak_rss_gb']:>11.2f} "
                      f"{r['peak_anon_gb']:>7.2f} {r['same']:>7.3f} "
                      f"{r['diff']:>7.3f}", flush=True)
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
