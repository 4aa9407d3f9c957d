"""Run the reference MoCo training (contrast-landmark ``train_moco.py``) on a CPU, logged per step like equinv.

    PYTHONPATH=.:/path/to/ref-deps python experiments/parity/run_reference.py \\
        --reference-dir /work/ref/contrast-landmark \\
        --data "celeba:../shared/data/celeba?split=not_mafl&holdout=1000&part=train&limit=6400" \\
        --out /work/runs/parity/ref --batch-size 64 --lr 0.03 --epochs 800 --train-epochs 2

The reference's own ``main()`` runs: its argument parser, ``CelebAPrunedAligned_MAFLVal`` dataset and
augmentation chain, ``InsResNet18``, ``MemoryMoCo``, ``NCESoftmaxLoss``, SGD, ``adjust_learning_rate``
and ``train_moco`` loop. This script only

- lays out the images of ``--data`` the way the reference's CelebA loader reads them (``OUT/layout``:
  a 202,599-row landmark list and partition file in which exactly these images form the training
  partition, MAFL lists of other ids, and ``Img/img_align_celeba_hq`` linked to the image folder);
- replaces the loader's hard-coded crop of the 178-px aligned frame, ``crop(30, 0, 178, 178)``, by the same
  crop scaled to the images given (e.g. ``crop(15, 0, 89, 89)`` for the half-size CelebA here), before its
  ``Resize(136)``;
- starts the reference from the initial weights and queue of ``equinv pretrain --seed SEED``
  (``--init equinv``, default; ``--init reference`` keeps the reference's own random init);
- records, for every step, the loss the reference's criterion returned and the logits its
  ``MemoryMoCo`` produced (positive / negative similarity, top-1) to ``OUT/log.jsonl`` with equinv's
  field names;
- stops after ``--train-epochs`` epochs of the ``--epochs`` cosine horizon (the reference's own per-epoch
  cosine, ``--cosine``), then writes ``OUT/backbone.safetensors`` from the reference's checkpoint.

All randomness (data order, augmentation) comes from ``torch.manual_seed(--seed)`` set before ``main()``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from refcode import equinv_to_reference, initial_moco_state, save_reference_backbone, use_reference  # noqa: E402

from equinv.data.spec import read_index  # noqa: E402
from equinv.errors import InputError  # noqa: E402

N_CELEBA = 202_599  # rows the reference's loader asserts
HEADER = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"


def scale_crop(ds, scale: float) -> None:
    """Replace the loader's ``crop(30, 0, 178, 178)`` of the 178-px frame by the same box at ``scale``."""
    import torchvision.transforms as TV
    import torchvision.transforms.functional as TF

    top, side = round(30 * scale), round(178 * scale)
    ds.initial_transforms = TV.Compose([lambda im: TF.crop(im, top, 0, side, side), TV.Resize(ds.imwidth)])


class _Stop(Exception):
    """Raised from the learning-rate hook when the requested epochs are done."""


def write_layout(spec: str, out: Path) -> tuple[Path, float, list[str]]:
    """Lay out ``spec``'s images as the reference's CelebA training partition; returns (root, scale, names)."""
    records = read_index(spec).records
    folders = {Path(r.path).parent for r in records}
    if len(folders) != 1:
        raise InputError(f"the reference run needs one image folder, got {len(folders)}", spec)
    names = [Path(r.path).name for r in records]
    ids = {int(Path(n).stem) for n in names}
    if max(ids) > 200_000:
        raise InputError("CelebA ids above 200000 collide with the fake MAFL lists", spec)
    from PIL import Image

    with Image.open(records[0].path) as im:
        scale = im.width / 178.0
    root = out / "layout"
    for sub in ("Anno", "Eval", "MAFL", "Img"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    lines = [str(N_CELEBA), HEADER] + [f"{i:06d}.jpg" + " 0" * 10 for i in range(1, N_CELEBA + 1)]
    (root / "Anno" / "list_landmarks_align_celeba.txt").write_text("\n".join(lines) + "\n")
    part = [f"{i:06d}.jpg {0 if i in ids else 1}" for i in range(1, N_CELEBA + 1)]
    (root / "Eval" / "list_eval_partition.txt").write_text("\n".join(part) + "\n")
    (root / "MAFL" / "training.txt").write_text("".join(f"{i:06d}.jpg\n" for i in range(200_001, 201_001)))
    (root / "MAFL" / "testing.txt").write_text("".join(f"{i:06d}.jpg\n" for i in range(201_001, 202_001)))
    link = root / "Img" / "img_align_celeba_hq"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(folders.pop().resolve(), target_is_directory=True)
    return root, scale, names


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference-dir", required=True, help="checkout of github.com/cvl-umass/contrast-landmark")
    p.add_argument("--data", required=True, help="equinv dataset spec of aligned CelebA images (one folder)")
    p.add_argument("--out", required=True)
    p.add_argument("--arch", default="resnet18", choices=["resnet18", "resnet50"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.03)
    p.add_argument("--epochs", type=int, default=800, help="cosine horizon (the reference's --epochs)")
    p.add_argument("--train-epochs", type=int, default=2,
                   help="epochs actually run (each one's checkpoint is kept as ckpt/moco/ckpt_epoch_N.pth)")
    p.add_argument("--export-epoch", type=int, default=None,
                   help="only convert the checkpoint of this epoch to OUT/backbone_epochN.safetensors and exit")
    p.add_argument("--no-cosine", action="store_true", help="constant lr (the reference without --cosine)")
    p.add_argument("--queue", type=int, default=4096)
    p.add_argument("--temperature", type=float, default=0.07)
    p.add_argument("--momentum", type=float, default=0.999, help="key-encoder momentum (the reference's --alpha)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", choices=["equinv", "reference"], default="equinv",
                   help="initial weights and queue: equinv pretrain's for --seed (default) or the reference's own")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return p.parse_args()


def _patch_reference(T, a: argparse.Namespace, scale: float, out: Path) -> dict:
    """Swap the reference script's dataset, encoder, contrast and loss for logging / initialising versions."""
    init_state = init_queue = None
    if a.init == "equinv":
        eq_state, init_queue = initial_moco_state(a.arch, a.seed, a.queue, a.momentum, a.temperature)
        init_state = equinv_to_reference(eq_state)

    ref_dataset, ref_encoder = T.CelebAPrunedAligned_MAFLVal, {"resnet18": T.InsResNet18, "resnet50": T.InsResNet50}
    ref_contrast, ref_loss, ref_adjust = T.MemoryMoCo, T.NCESoftmaxLoss, T.adjust_learning_rate

    def dataset(root_dir, **kw):
        ds = ref_dataset(root_dir, **kw)
        scale_crop(ds, scale)
        return ds

    def encoder(width=1, pool_size=7):
        net = ref_encoder[a.arch](width=width, pool_size=pool_size)
        if init_state is not None:
            net.load_state_dict(init_state)
        return net

    state = {"step": 0, "epoch": 0, "optimizer": None, "contrast": None, "out": None, "t": time.perf_counter()}
    log_path = out / "log.jsonl"
    log_path.write_text("")

    class LoggedMemoryMoCo(ref_contrast):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            if init_queue is not None:
                self.memory.copy_(init_queue)
            state["contrast"] = self

        def forward(self, q, k):
            res = super().forward(q, k)
            state["out"] = res.detach()
            return res

    class LoggedLoss(ref_loss):
        def forward(self, x):
            loss = super().forward(x)
            logits = state["out"].reshape(x.shape[0], -1)
            state["step"] += 1
            now = time.perf_counter()
            row = {
                "step": state["step"], "epoch": state["epoch"], "loss": float(loss.detach()),
                "lr": state["optimizer"].param_groups[0]["lr"],
                "img_per_s": x.shape[0] / max(now - state["t"], 1e-9),
                "pos_sim": float(logits[:, 0].mean() * a.temperature),
                "neg_sim": float(logits[:, 1:].mean() * a.temperature),
                "acc": float((logits.argmax(1) == 0).float().mean()),
                "queue_norm": float(state["contrast"].memory.norm(dim=1).mean()),
                "check_loss": float(F.cross_entropy(logits, torch.zeros(x.shape[0], dtype=torch.long))),
            }
            state["t"] = now
            with open(log_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            return loss

    def adjust(epoch, opt, optimizer):
        if epoch > a.train_epochs:
            raise _Stop
        ref_adjust(epoch, opt, optimizer)
        state["epoch"], state["optimizer"] = epoch, optimizer
        print(f"epoch {epoch}: lr {optimizer.param_groups[0]['lr']:.6g}", flush=True)

    T.CelebAPrunedAligned_MAFLVal, T.MemoryMoCo, T.NCESoftmaxLoss, T.adjust_learning_rate = (
        dataset, LoggedMemoryMoCo, LoggedLoss, adjust)
    setattr(T, {"resnet18": "InsResNet18", "resnet50": "InsResNet50"}[a.arch], encoder)

    return state


def main() -> None:
    a = _args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    use_reference(a.reference_dir)
    if a.export_epoch is not None:
        export(out, a.arch, f"ckpt_epoch_{a.export_epoch}.pth", f"backbone_epoch{a.export_epoch}.safetensors")
        return
    if a.threads:
        torch.set_num_threads(a.threads)
    root, scale, names = write_layout(a.data, out)
    import train_moco as T  # the reference's script, imported as a module

    state = _patch_reference(T, a, scale, out)
    argv = [
        "train_moco.py", "--batch_size", str(a.batch_size), "--num_workers", str(a.workers),
        "--epochs", str(a.epochs), "--learning_rate", str(a.lr), "--nce_k", str(a.queue),
        "--nce_t", str(a.temperature), "--alpha", str(a.momentum), "--model", a.arch,
        "--image_crop", "20", "--image_size", "136", "--dataset", "CelebA", "--data_folder", str(root),
        "--model_path", str(out / "ckpt"), "--model_name", "moco", "--save_freq", "1",
    ] + ([] if a.no_cosine else ["--cosine"])
    sys.argv = argv
    top, side = round(30 * scale), round(178 * scale)
    meta = {"argv": argv, "images": len(names), "crop_top_left_height_width": [top, 0, side, side]}
    (out / "reference_argv.json").write_text(json.dumps(meta))
    torch.manual_seed(a.seed)
    try:
        T.main()
    except _Stop:
        pass
    epoch = export(out, a.arch, "current.pth", "backbone.safetensors")
    print(f"done: {state['step']} steps, epoch {epoch}; backbone in {out / 'backbone.safetensors'}")


def export(out: Path, arch: str, ckpt_name: str, backbone_name: str) -> int:
    """Convert the reference checkpoint ``OUT/ckpt/moco/CKPT`` (its query encoder) to an equinv backbone file."""
    path = out / "ckpt" / "moco" / ckpt_name
    if not path.is_file():
        raise InputError("reference checkpoint not found", path)
    # the reference pickles its argparse namespace into the checkpoint: our own run's file, trusted
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    save_reference_backbone(ckpt["model"], arch, out / backbone_name)
    return int(ckpt["epoch"])


if __name__ == "__main__":
    main()
