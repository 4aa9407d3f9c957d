"""Numerical parity with the reference code: MoCo steps and a landmark-regressor step on identical inputs.

    PYTHONPATH=.:/path/to/ref-deps python experiments/parity/numerics.py \\
        --reference-dir /work/ref/contrast-landmark --out experiments/parity/results/numerics.json

**MoCo.** equinv's :class:`~equinv.models.moco.MoCo` (``bn_groups=1``, the reference's layout on one
device) and the reference's ``InsResNet18`` + ``MemoryMoCo`` + ``NCESoftmaxLoss`` start from the same
weights (equinv's seed-0 initialisation, copied) and the same queue. Two batches of real CelebA views
(made once by equinv's face view chain, then fed to both: augmentation is bypassed) go through two
training steps: the reference's own ``train_moco.train_moco`` loop (one batch per call) and equinv's
forward / backward / SGD step. Per step: loss, logits, every gradient of the query encoder, the query
weights after the SGD step, BN running statistics and the queue. The second step checks the momentum
update, which the two codes place differently (equinv before the keys are encoded, the reference after
the optimiser step: the same recurrence).

**Regressor.** Frozen trunk (equinv seed-0 random init in both codes, or ``--backbone``), 960-channel
hypercolumn at 48², ``IntermediateKeypointPredictor(960, 5, 50, M)`` vs equinv's ``KeypointRegressor`` with
copied weights, for M = 100 (reference) and M = 3 (the CPU plan). The reference side is one call of its
``eval_face.train`` (hypercolumn from its ``InsResNet18``, regressor, ``regression_loss``, Adam step);
the equinv side is :func:`equinv.evaluate.regression.regressor_step` on the factorised per-layer maps, as
``equinv eval regress`` trains. Compared: hypercolumn, predictions, loss, gradients, weights after one
Adam step (betas 0.5/0.999, lr 1e-3, wd 5e-4), the reference's IOD metric against equinv's; and the
effect of equinv's fp16 feature cache on the predictions.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from argparse import Namespace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from refcode import equinv_to_reference, reference_encoder, use_reference  # noqa: E402

from equinv.augment.recipes import face_moco  # noqa: E402
from equinv.data.dataset import LandmarkDataset  # noqa: E402
from equinv.data.preprocess import FACE_CONTEXT, Preprocess  # noqa: E402
from equinv.data.spec import read_index  # noqa: E402
from equinv.train.views import ViewMaker  # noqa: E402


def diff(ref: torch.Tensor, ours: torch.Tensor) -> dict:
    """max |a−b|, max |a−b| / max |a|, and ‖a−b‖ / ‖a‖ (float64)."""
    a, b = ref.detach().double().flatten(), ours.detach().double().flatten()
    d = (a - b).abs()
    scale = float(a.abs().max()) or 1.0
    norm = float(a.norm()) or 1.0
    return {"max_abs": float(d.max()), "max_rel": float(d.max()) / scale, "rel_l2": float((a - b).norm()) / norm}


def diff_many(pairs: list[tuple[str, torch.Tensor, torch.Tensor]]) -> dict:
    """Summary over many tensors: the worst tensor by relative L2, and all of them concatenated."""
    per = {name: diff(a, b) for name, a, b in pairs}
    worst = max(per, key=lambda k: per[k]["rel_l2"])
    cat = diff(torch.cat([a.detach().double().flatten() for _, a, _ in pairs]),
               torch.cat([b.detach().double().flatten() for _, _, b in pairs]))
    return {"all": cat, "worst_tensor": worst, "worst": per[worst], "tensors": len(per)}


def face_batches(spec: str, n: int, batch: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` fixed (query, key) view batches of real images, from equinv's face MoCo chain."""
    pre = Preprocess(size=96, context=FACE_CONTEXT)
    ds = LandmarkDataset(read_index(spec), pre)
    views = ViewMaker(face_moco())
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        canv = ds.__getitems__(list(range(i * batch, (i + 1) * batch)))["image"]
        out.append(views(canv, g))
    return out


def reference_moco_steps(T, batches, init_state: dict, queue: torch.Tensor, lr: float,
                         perm_seed: int, dtype: torch.dtype = torch.float32) -> list[dict]:
    """The reference's ``train_moco`` loop, one batch per call, from the given weights and queue.

    ``perm_seed`` seeds its shuffle-BN permutation (with one BN group it only reorders the key batch).
    ``dtype=torch.float64`` runs the whole computation in double precision: the loop's ``inputs.float()``
    is made a no-op for the duration (the only float32 cast on its path), giving the exact-arithmetic
    reference that both float32 runs are measured against.
    """
    model, model_ema = reference_encoder("resnet18"), reference_encoder("resnet18")
    model.load_state_dict(init_state)
    model.to(dtype)
    model_ema.to(dtype)
    T.moment_update(model, model_ema, 0)  # the reference's own copy into its key encoder
    contrast = T.MemoryMoCo(128, 10_000, 4096, 0.07, use_softmax=True)
    contrast.memory = queue.clone().to(dtype)
    criterion = T.NCESoftmaxLoss()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    caught: dict = {}
    contrast.register_forward_hook(lambda m, i, o: caught.__setitem__("logits", o.detach().clone()))
    criterion.register_forward_hook(lambda m, i, o: caught.__setitem__("loss", o.detach().clone()))
    steps = []
    torch.manual_seed(perm_seed)
    to_float = torch.Tensor.float
    for x1, x2 in batches:
        loader = [(torch.cat([x1, x2], 1).to(dtype), None, None, torch.arange(x1.shape[0]))]
        if dtype == torch.float64:
            torch.Tensor.float = lambda self, *a, **k: self  # type: ignore[method-assign]
        try:
            T.train_moco(1, loader, model, model_ema, contrast, criterion, opt,
                         Namespace(gpu=None, print_freq=10**9, alpha=0.999))
        finally:
            torch.Tensor.float = to_float  # type: ignore[method-assign]
        steps.append({
            "loss": caught["loss"], "logits": caught["logits"],
            "grads": {n: p.grad.clone() for n, p in model.named_parameters()},
            "weights": {n: p.detach().clone() for n, p in model.named_parameters()},
            "buffers": {n: b.clone() for n, b in model.named_buffers() if b.is_floating_point()},
            "queue": contrast.memory.clone(), "pointer": int(contrast.index),
        })
    return steps


def equinv_moco_steps(batches, seed: int, lr: float) -> tuple[list[dict], dict, torch.Tensor]:
    """equinv's MoCo forward / backward / SGD step per batch (``bn_groups=1``); also returns the initial
    weights (in the reference's names) and queue."""
    import equinv.models.moco as eqm
    from equinv.models.moco import MoCo

    torch.manual_seed(seed)
    eq = MoCo("resnet18", queue_size=4096, momentum=0.999, temperature=0.07, bn_groups=1)
    init = equinv_to_reference({k: v.clone() for k, v in eq.encoder_q.state_dict().items()})
    queue = eq.queue.clone()
    opt = torch.optim.SGD(eq.encoder_q.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    caught: dict = {}
    orig_nce = eqm.info_nce

    def spy(*args, **kw):
        loss, logits = orig_nce(*args, **kw)
        caught["logits"] = logits.detach().clone()
        return loss, logits

    eqm.info_nce = spy  # MoCo.forward does not return its logits
    steps = []
    try:
        for x1, x2 in batches:
            eq.train()
            loss, _ = eq(x1, x2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grads = equinv_to_reference({n: p.grad.clone() for n, p in eq.encoder_q.named_parameters()})
            opt.step()
            steps.append({
                "loss": loss.detach(), "logits": caught["logits"], "grads": grads,
                "weights": equinv_to_reference({n: p.detach().clone() for n, p in eq.encoder_q.named_parameters()}),
                "buffers": equinv_to_reference({n: b.clone() for n, b in eq.encoder_q.named_buffers()
                                                if b.is_floating_point()}),
                "queue": eq.queue.clone(), "pointer": int(eq.queue_ptr),
            })
    finally:
        eqm.info_nce = orig_nce
    return steps, init, queue


def compare_moco(a: dict, b: dict) -> dict:
    """Differences between one step of two runs (``a`` is the baseline)."""
    def many(key):
        return diff_many([(n, a[key][n], b[key][n]) for n in a[key]])

    return {
        "loss_a": float(a["loss"]), "loss_b": float(b["loss"]), "loss": diff(a["loss"], b["loss"]),
        "logits": diff(a["logits"], b["logits"]),
        "top1_a": float((a["logits"].argmax(1) == 0).float().mean()),
        "top1_b": float((b["logits"].argmax(1) == 0).float().mean()),
        "grads": many("grads"), "weights_after_step": many("weights"), "bn_running_stats": many("buffers"),
        "queue": diff(a["queue"], b["queue"]), "queue_pointer": [a["pointer"], b["pointer"]],
    }


def moco_check(T, spec: str, batch: int, lr: float, seed: int) -> dict:
    """Two MoCo steps in both codes from identical weights, queue and views; see the module docstring.

    ``reference_vs_equinv`` is the comparison. Floors: ``reference_vs_reference`` runs the reference twice
    with different shuffle-BN permutations; ``reference64_vs_reference`` and ``reference64_vs_equinv``
    measure both float32 runs against the reference in float64 (exact arithmetic for this purpose): if
    equinv's distance to it is that of the reference's own float32 run, the two codes differ by rounding.
    """
    batches = face_batches(spec, 2, batch, seed)
    ours, init, queue = equinv_moco_steps(batches, seed, lr)
    ref_a = reference_moco_steps(T, batches, init, queue, lr, perm_seed=1)
    ref_b = reference_moco_steps(T, batches, init, queue, lr, perm_seed=2)
    ref64 = reference_moco_steps(T, batches, init, queue, lr, perm_seed=1, dtype=torch.float64)
    def steps(a, b):
        return [compare_moco(x, y) | {"step": i + 1} for i, (x, y) in enumerate(zip(a, b, strict=True))]

    return {"batch": batch, "lr": lr, "bn_groups": 1, "reference_vs_equinv": steps(ref_a, ours),
            "reference_vs_reference": steps(ref_a, ref_b), "reference64_vs_reference": steps(ref64, ref_a),
            "reference64_vs_equinv": steps(ref64, ours)}


def _regressor_inputs(spec: str, batch: int, backbone: str | None, seed: int):
    """Normalised views, ``[-1, 1]`` targets, the reference encoder and equinv's hypercolumn of the same trunk."""
    from equinv.data.preprocess import center_view
    from equinv.models.hypercolumn import Hypercolumn, frozen_trunk

    pre = Preprocess(size=96, context=FACE_CONTEXT)
    ds = LandmarkDataset(read_index(spec), pre)
    samples = [center_view(ds.sample(i), pre) for i in range(batch)]
    img = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1) for s in samples]).float() / 255
    mean = torch.tensor([0.5084, 0.4224, 0.3769]).view(1, 3, 1, 1)
    std = torch.tensor([0.2599, 0.2371, 0.2323]).view(1, 3, 1, 1)
    x = (img - mean) / std
    # the reference's target: kp_normalize(H, W, kp) = 2·kp/(W−1) − 1 of the same landmarks
    kp = torch.stack([torch.from_numpy(s.landmarks) for s in samples]).float()
    target = 2 * kp / 95 - 1
    trunk = frozen_trunk("resnet18", backbone, seed=seed)
    ref_net = reference_encoder("resnet18")
    ref_state = {"encoder.module." + k: v for k, v in trunk.state_dict().items()}
    missing = ref_net.load_state_dict(ref_state, strict=False).missing_keys  # as eval_face.py (strict=False)
    if [k for k in missing if ".fc." not in k]:
        raise RuntimeError(f"trunk keys did not map to the reference: {missing[:5]}")
    ref_net.eval()
    return x, target, ref_net, Hypercolumn(trunk, size=48)


def regressor_check(E, spec: str, batch: int, backbone: str | None, seed: int) -> list[dict]:
    """One regressor step in both codes on identical frozen features; for M = 100 and M = 3."""
    from models.keypoint_prediction import IntermediateKeypointPredictor
    from models.loss import regression_loss as ref_regression_loss
    from models.metric import inter_ocular_error

    from equinv.evaluate.metrics import iod_error
    from equinv.evaluate.regressor_fit import regressor_step
    from equinv.models.regressor import KeypointRegressor

    x, target, ref_net, hc = _regressor_inputs(spec, batch, backbone, seed)
    with torch.no_grad():
        feat_ref = ref_net(x, 4, True, (48, 48))
        maps = hc.maps(x)
        feat_eq = hc(x)
    results = []
    for mul in (100.0, 3.0):
        torch.manual_seed(seed + 1)
        ref_reg = IntermediateKeypointPredictor(960, num_annotated_points=5, num_intermediate_points=50,
                                                softargmax_mul=mul)
        eq_reg = KeypointRegressor(hc.channels, 5, n_heatmaps=50, softargmax_mul=mul)
        with torch.no_grad():
            eq_reg.heatmaps.conv.weight.copy_(ref_reg.inner_conv.weight)
            eq_reg.regressor.weight.copy_(ref_reg.reg_conv.weight)
            pred_ref0, _ = ref_reg(feat_ref)
            pred_eq0 = eq_reg(maps, 48)
            pred_dense0 = eq_reg.forward_dense(feat_eq)
            pred_fp16 = eq_reg([m.half().float() for m in maps], 48)
        loss_ref0 = ref_regression_loss(pred_ref0, target)
        adam = dict(lr=1e-3, betas=(0.5, 0.999), eps=1e-8, weight_decay=5e-4)
        opt_ref = torch.optim.Adam(ref_reg.parameters(), **adam)  # as eval_face.py (unused params get no grad)
        opt_eq = torch.optim.Adam(eq_reg.parameters(), **adam)
        opt = Namespace(gpu=None, print_freq=10**9, layer=4, use_hypercol=True, output_shape=(48, 48),
                        eye_idx=[0, 1])
        ref64 = copy.deepcopy(ref_reg).double()  # the same step in float64: the rounding floor
        ref_regression_loss(ref64(feat_ref.double())[0], target.double()).backward()
        E.train(1, [(x, None, target, torch.arange(batch))], ref_net, ref_reg, ref_regression_loss, opt_ref, opt)
        grads_ref = (ref_reg.inner_conv.weight.grad.clone(), ref_reg.reg_conv.weight.grad.clone())
        loss_eq = regressor_step(eq_reg, opt_eq, maps, target, torch.ones(batch, 5, dtype=torch.bool), 48)
        grads_eq = (eq_reg.heatmaps.conv.weight.grad, eq_reg.regressor.weight.grad)
        px = 47.5  # normalised units → pixels of the 96-px view
        results.append({
            "softargmax_mul": mul, "batch": batch,
            "hypercolumn": diff(feat_ref, feat_eq),
            "pred_factorised": diff(pred_ref0, pred_eq0),
            "pred_dense": diff(pred_ref0, pred_dense0),
            "loss_ref": float(loss_ref0), "loss_equinv": loss_eq,
            "loss": diff(loss_ref0, torch.tensor(loss_eq)),
            "grad_heatmaps": diff(grads_ref[0], grads_eq[0]),
            "grad_readout": diff(grads_ref[1], grads_eq[1]),
            "floor_fp32_vs_fp64": {"grad_heatmaps": diff(ref64.inner_conv.weight.grad, grads_ref[0]),
                                   "grad_readout": diff(ref64.reg_conv.weight.grad, grads_ref[1])},
            "weights_after_adam": {
                "heatmaps": diff(ref_reg.inner_conv.weight, eq_reg.heatmaps.conv.weight),
                "readout": diff(ref_reg.reg_conv.weight, eq_reg.regressor.weight),
            },
            "iod_metric": {"ref": float(inter_ocular_error(pred_ref0, target, eyeidxs=[0, 1])),
                           "equinv": float(iod_error(pred_ref0, target, [0, 1]).mean())},
            "fp16_cache_effect_px": {"max": float((pred_fp16 - pred_eq0).abs().max() * px),
                                     "mean": float((pred_fp16 - pred_eq0).abs().mean() * px)},
        })
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference-dir", required=True)
    p.add_argument("--moco-data", default="celeba:../shared/data/celeba?split=not_mafl&holdout=1000&part=train")
    p.add_argument("--regress-data", default="mtfl:../shared/data/mtfl?holdout=1000&part=train")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.03)
    p.add_argument("--backbone", default=None, help="trunk for the regressor check (default: seed-0 random init)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    use_reference(a.reference_dir)
    import eval_face as E  # the reference's scripts, imported as modules
    import train_moco as T

    res = {
        "moco": moco_check(T, a.moco_data, a.batch, a.lr, a.seed),
        "regressor": regressor_check(E, a.regress_data, a.batch, a.backbone, a.seed),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    for what in ("reference_vs_equinv", "reference_vs_reference", "reference64_vs_reference",
                 "reference64_vs_equinv"):
        for s in res["moco"][what]:
            print(f"moco {what} step {s['step']}: loss {s['loss_a']:.6f} vs {s['loss_b']:.6f}; "
                  f"logits max|Δ| {s['logits']['max_abs']:.2e}; grads rel-L2 {s['grads']['all']['rel_l2']:.2e} "
                  f"(worst {s['grads']['worst_tensor']} {s['grads']['worst']['rel_l2']:.2e}); "
                  f"weights max|Δ| {s['weights_after_step']['all']['max_abs']:.2e}; "
                  f"queue max|Δ| {s['queue']['max_abs']:.2e}")
    for r in res["regressor"]:
        print(f"regressor M={r['softargmax_mul']:g}: hypercolumn max|Δ| {r['hypercolumn']['max_abs']:.2e}; "
              f"pred max|Δ| {r['pred_factorised']['max_abs']:.2e}; loss {r['loss_ref']:.6f} vs {r['loss_equinv']:.6f}; "
              f"grad rel-L2 {r['grad_heatmaps']['rel_l2']:.2e} / {r['grad_readout']['rel_l2']:.2e}; "
              f"fp16 cache: max {r['fp16_cache_effect_px']['max']:.3f} px")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
