"""The two codes' MoCo views of the same images, measured with the same encoders.

    PYTHONPATH=.:/path/to/ref-deps python experiments/parity/views.py --reference-dir /work/ref/contrast-landmark \\
        --encoder init --encoder reference=/work/runs/parity/ref/backbone_epoch1.safetensors ... \\
        --out experiments/parity/results/views.json

For ``--n`` images of ``--data``, two views each are drawn by the reference's ``CelebAPrunedAligned_MAFLVal``
(its JPEG noise, ``RandomResizedCrop``, ``ColorJitter``, PCA lighting, normalisation and 20-px slice, on
the half-size frame as in ``run_reference.py``) and by equinv's face view chain
(:class:`~equinv.train.views.ViewMaker`). Reported per code:

- the positive similarity ``q·k`` of the two views under each ``--encoder`` (trunk + head, BN with batch
  statistics of 64 views as in training), with its standard error over images: the quantity the training
  curves log, here with the network held fixed, so a gap can only come from the views;
- the random-resized-crop boxes actually drawn (area fraction, aspect), read by wrapping torchvision's
  ``RandomResizedCrop.get_params`` in the reference and :func:`equinv.augment.geometric.sample_rrc` in equinv;
- per-view channel means and standard deviations of the normalised pixels (photometric strength).

``--encoder`` is ``init`` (the seed-0 initial encoder both training runs start from) or ``NAME=FILE`` of a
MoCo checkpoint with its head (equinv ``checkpoints/epoch_N.safetensors`` or the reference's
``ckpt_epoch_N.pth``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from refcode import initial_moco_state, use_reference  # noqa: E402
from run_reference import scale_crop, write_layout  # noqa: E402

from equinv.augment import geometric as G  # noqa: E402
from equinv.augment.recipes import face_moco  # noqa: E402
from equinv.data.dataset import LandmarkDataset  # noqa: E402
from equinv.data.preprocess import FACE_CONTEXT, Preprocess  # noqa: E402
from equinv.data.spec import read_index  # noqa: E402
from equinv.models.backbones import Encoder  # noqa: E402
from equinv.train.views import ViewMaker  # noqa: E402


def load_encoder(item: str, seed: int) -> tuple[str, Encoder]:
    """``init`` or ``NAME=FILE`` (equinv MoCo checkpoint or reference ``.pth``) → an equinv Encoder with head."""
    enc = Encoder("resnet18")
    if item == "init":
        state, _ = initial_moco_state("resnet18", seed, 4096, 0.999, 0.07)
        enc.load_state_dict(state)
        return "init", enc
    name, _, path = item.partition("=")
    if path.endswith(".pth"):  # the reference's checkpoint: encoder.module.* incl. fc
        raw = torch.load(path, map_location="cpu", weights_only=False)["model"]
        state = {("head." + k[len("encoder.module."):] if k.startswith("encoder.module.fc.")
                  else "backbone." + k[len("encoder.module."):]): v for k, v in raw.items()}
    else:  # equinv's MoCo checkpoint: model/encoder_q.*
        from safetensors.torch import load_file

        raw = load_file(path)
        state = {k[len("model/encoder_q."):]: v for k, v in raw.items() if k.startswith("model/encoder_q.")}
    enc.load_state_dict(state)
    return name, enc


@torch.no_grad()
def positive_similarity(enc: Encoder, v1: torch.Tensor, v2: torch.Tensor, batch: int = 64) -> dict:
    """Mean and s.e. over images of q·k, encoding in batches with BN batch statistics (training mode)."""
    enc.train()
    sims = []
    for s in range(0, v1.shape[0], batch):
        sims.append((enc(v1[s : s + batch]) * enc(v2[s : s + batch])).sum(1))
    x = torch.cat(sims).double()
    return {"mean": float(x.mean()), "se": float(x.std() / math.sqrt(len(x)))}


def summary(x: torch.Tensor) -> dict:
    x = x.double().flatten()
    q = torch.quantile(x, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    return {"mean": float(x.mean()), "p10": float(q[0]), "p50": float(q[1]), "p90": float(q[2])}


def pixel_stats(v: torch.Tensor) -> dict:
    m, s = v.mean((2, 3)), v.std((2, 3))
    return {"channel_mean": [summary(m[:, c]) for c in range(3)], "channel_std": [summary(s[:, c]) for c in range(3)]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference-dir", required=True)
    p.add_argument("--data", default="celeba:../shared/data/celeba?split=not_mafl&holdout=1000&part=train&limit=4800")
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--encoder", action="append", default=[], help="init | NAME=CHECKPOINT (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="/tmp/parity_views", help="scratch folder for the reference's file layout")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    use_reference(a.reference_dir)
    from data_loader.data_loaders_face import CelebAPrunedAligned_MAFLVal
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(a.seed)
    root, scale, names = write_layout(a.data, Path(a.work))
    n = min(a.n, len(names))
    boxes: dict[str, list] = {"reference": [], "equinv": []}
    orig_params = RandomResizedCrop.get_params

    def spy_params(img, scale_, ratio):
        box = orig_params(img, scale_, ratio)
        boxes["reference"].append(box)
        return box

    RandomResizedCrop.get_params = staticmethod(spy_params)
    ds = CelebAPrunedAligned_MAFLVal(str(root), train=True, pair_image=True, do_augmentations=True,
                                     imwidth=136, crop=20)
    scale_crop(ds, scale)
    ref = torch.stack([ds[i][0] for i in range(n)])
    RandomResizedCrop.get_params = orig_params
    ref1, ref2 = ref[:, :3], ref[:, 3:]

    orig_rrc = G.sample_rrc

    def spy_rrc(*args, **kw):
        b = orig_rrc(*args, **kw)
        boxes["equinv"].extend(b.tolist())
        return b

    G.sample_rrc = spy_rrc
    eds = LandmarkDataset(read_index(a.data), Preprocess(size=96, context=FACE_CONTEXT))
    views, g = ViewMaker(face_moco()), torch.Generator().manual_seed(a.seed)
    eq1, eq2 = [], []
    for s in range(0, n, 64):
        q, k = views(eds.__getitems__(list(range(s, min(s + 64, n))))["image"], g)
        eq1.append(q)
        eq2.append(k)
    G.sample_rrc = orig_rrc
    eq1, eq2 = torch.cat(eq1), torch.cat(eq2)

    def box_stats(rows) -> dict:
        b = torch.tensor(rows, dtype=torch.float64)  # (top, left, h, w) in both codes
        return {"area_fraction": summary(b[:, 2] * b[:, 3] / 136**2), "aspect_w_over_h": summary(b[:, 3] / b[:, 2]),
                "n": len(rows)}

    res = {"n_images": n, "data": a.data,
           "rrc": {k: box_stats(v) for k, v in boxes.items()},
           "pixels": {"reference": pixel_stats(torch.cat([ref1, ref2])), "equinv": pixel_stats(torch.cat([eq1, eq2]))},
           "positive_similarity": {}}
    for item in a.encoder or ["init"]:
        name, enc = load_encoder(item, a.seed)
        res["positive_similarity"][name] = {"reference_views": positive_similarity(enc, ref1, ref2),
                                            "equinv_views": positive_similarity(enc, eq1, eq2)}
        r = res["positive_similarity"][name]
        print(f"encoder {name}: q·k reference views {r['reference_views']['mean']:.4f} ± "
              f"{r['reference_views']['se']:.4f}, equinv views {r['equinv_views']['mean']:.4f} ± "
              f"{r['equinv_views']['se']:.4f}")
    for k in ("reference", "equinv"):
        print(f"{k}: RRC area {res['rrc'][k]['area_fraction']}, channel-0 std {res['pixels'][k]['channel_std'][0]}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
