"""A saved landmark model: a frozen feature source and a keypoint regressor, applied to images.

A model directory holds two files; loading runs no code (safetensors + JSON only):

* ``model.safetensors`` — the weights the model needs: ``source.*`` (the frozen trunk, and the projector,
  NMF parts or DVE network of its source) and ``regressor.*`` (the head: the keypoint regressor, or, for a
  ``transfer`` head, the labelled examples' descriptors, visibility, mean shape and spread);
* ``model.json`` — the format version, the feature source (:class:`~equinv.features.spec.FeatureSpec` and
  what rebuilding it needs), the regressor's shape, the input size and normalisation, the framing of the
  training data, the landmark names and left/right pairs, the training data and settings, validation metrics
  beside the mean training shape's, and software versions.

Predictions (:meth:`LandmarkModel.predict`) are in each input image's own pixels (x right, y down, pixel
centres at integers). On request each point gets a confidence in (0, 1] from flip consistency: the view is also
predicted mirrored (landmarks relabelled left ↔ right, x mirrored back), and ``d``, half the distance between the
two predictions in pixels of the ``S``-px view, gives ``1 / (1 + d / (0.05·S))`` — 1 when both agree, 1/2 when
they disagree by the PCK threshold ``0.05·S`` on each side. It costs a second pass of the network.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from equinv.data.preprocess import Preprocess
from equinv.errors import InputError
from equinv.features.sources import source_skeleton
from equinv.features.spec import FeatureSpec
from equinv.features.stats import prepare_input
from equinv.models.regressor import KeypointRegressor
from equinv.models.transfer_head import TransferHead

FORMAT = "equinv-landmark-model"
FORMAT_VERSION = 1
WEIGHTS, META = "model.safetensors", "model.json"


def confidence(disagreement_px: Tensor, size: int) -> Tensor:
    """``1 / (1 + d / (0.05·size))``: the confidence of a point whose two predictions are ``2d`` view px apart."""
    return 1.0 / (1.0 + disagreement_px / (0.05 * size))


def unflip(points: Tensor, flip_perm) -> Tensor:
    """Points predicted on mirrored views ``(B, K, 2)`` (normalised) → the original view's frame and labels."""
    out = points[:, list(flip_perm)].clone()
    out[..., 0] = -out[..., 0]  # x' = W − 1 − x is n' = −n in the frame n = 2x/(W − 1) − 1
    return out


@dataclass
class LandmarkModel:
    """A frozen feature source and a trained regressor, with what using them on images needs.

    Attributes:
        source: the feature source (``maps(x)`` of normalised ``(B, 3, S, S)`` views).
        regressor: the :class:`~equinv.models.regressor.KeypointRegressor`.
        meta: the ``model.json`` content (see the module docstring).
    """

    source: nn.Module
    regressor: KeypointRegressor | TransferHead
    meta: dict

    # -- what it is ------------------------------------------------------------------------------------------
    @property
    def landmark_names(self) -> list[str]:
        """The names of the K landmarks, in output order."""
        return list(self.meta["landmarks"]["names"])

    @property
    def preprocess(self) -> Preprocess:
        """The view size and canvas context the model was trained with."""
        f = self.meta["framing"]
        return Preprocess(size=int(self.meta["input"]["image_size"]), context=float(f["context"]),
                          box_scale=float(f["box_scale"]), landmark_scale=float(f["landmark_scale"]))

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return next(iter(self.regressor.state_dict().values())).device  # a transfer head has buffers only

    def to(self, device) -> LandmarkModel:
        """Move the model to ``device`` (in place); returns it."""
        self.source.to(device)
        self.regressor.to(device)
        return self

    # -- applying it -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_views(self, views: Tensor, with_confidence: bool = True) -> tuple[Tensor, Tensor | None]:
        """Normalised ``[-1, 1]`` points ``(B, K, 2)`` of uint8 ``(B, 3, S, S)`` views, and their flip-consistency
        confidences ``(B, K)`` (``None`` without ``with_confidence``, which saves the second pass)."""
        size, grid = int(self.meta["input"]["image_size"]), int(self.meta["regressor"]["grid"])
        x = prepare_input(views, None, self.meta["input"]["stats"], self.device)
        pts = self.regressor(self.source.maps(x), grid).float().cpu()
        if not with_confidence:
            return pts, None
        mirrored = unflip(self.regressor(self.source.maps(x.flip(-1)), grid).float().cpu(),
                          self.meta["landmarks"]["flip_perm"])
        half_gap = (pts - mirrored).norm(dim=-1) / 2.0 * (size - 1) / 2.0
        return pts, confidence(half_gap, size)

    def predict(self, images, boxes=None, *, return_confidence: bool = False, batch: int = 32):
        """Landmarks of ``images`` in each image's own pixels: ``(N, K, 2)`` numpy (and ``(N, K)`` confidences).

        ``images``: paths, PIL images, ``(H, W, 3)`` uint8 arrays, or a float tensor batch ``(N, 3, H, W)`` in
        [0, 1]; each is taken as the object crop (the whole image is the view) unless ``boxes`` gives an object
        box ``(x0, y0, x1, y1)`` per image (framed as the training data framed its boxes, ``meta["framing"]``).
        """
        from equinv.landmarks.inputs import arrays_of, frame_arrays

        arrays = arrays_of(images)
        pts, conf = [], []
        for s in range(0, len(arrays), batch):
            chunk = arrays[s : s + batch]
            bx = None if boxes is None else list(boxes)[s : s + batch]
            views, frames = frame_arrays(chunk, self, bx)
            p, c = self.predict_views(views, return_confidence)
            pts.append(np.stack([f.to_source(q) for f, q in zip(frames, p.numpy(), strict=True)]))
            if c is not None:
                conf.append(c.numpy())
        out = np.concatenate(pts) if pts else np.zeros((0, len(self.landmark_names), 2))
        cf = np.concatenate(conf) if conf else np.zeros((0, len(self.landmark_names)))
        return (out, cf) if return_confidence else out

    # -- saving and loading ----------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` and ``model.json`` into ``directory`` (atomically, file by file)."""
        from equinv.records import write_json
        from equinv.safefile import write_safetensors

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {f"source.{k}": v.detach().cpu().contiguous() for k, v in self.source.state_dict().items()}
        tensors.update({f"regressor.{k}": v.detach().cpu().contiguous()
                        for k, v in self.regressor.state_dict().items()})
        write_safetensors(d / WEIGHTS, tensors, {"format": FORMAT, "format_version": str(FORMAT_VERSION)})
        write_json(d / META, self.meta)
        return d


def _read_meta(d: Path) -> dict:
    path = d / META
    if not path.is_file():
        raise InputError(f"not a landmark model directory (no {META}; make one with equinv fit)", d)
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"unreadable model description ({e})", path) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"not an equinv landmark model (format is not {FORMAT})", path)
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InputError(f"model format version {version} is newer than this equinv reads ({FORMAT_VERSION}): "
                         "upgrade equinv", path)
    return meta


def _read_weights(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise InputError("model weights missing", path)
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for truncated or corrupt files
        raise InputError(f"unreadable or truncated model weights ({str(e).splitlines()[0][:120]})", path) from None


def _load_state(module: nn.Module, state: dict[str, Tensor], what: str, path: Path) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError) as e:
        first = str(e).splitlines()[0][:200]
        raise InputError(f"{what} weights do not fit the model description ({first})", path) from None


def _head_skeleton(r: dict, tensors: dict[str, Tensor]) -> nn.Module:
    """The head ``model.json`` describes (``kind``: ``regressor``, the default, or ``transfer``), to load into."""
    if r.get("kind", "regressor") == "transfer":
        n, k, c = int(r["n_examples"]), int(r["n_landmarks"]), sum(r["channels"])
        return TransferHead(tuple(r["channels"]), torch.zeros(n, k, c), torch.zeros(n, k, dtype=torch.bool),
                            torch.zeros(k, 2), torch.ones(k), float(r["window"]), float(r["temperature"]))
    if r.get("kind", "regressor") != "regressor":
        raise ValueError(f"unknown head kind {r['kind']!r}")
    return KeypointRegressor(tuple(r["channels"]), int(r["n_landmarks"]), n_heatmaps=int(r["n_heatmaps"]),
                             softargmax_mul=float(r["softargmax_mul"]),
                             input_scale=torch.ones(sum(r["channels"])) if r.get("input_scale") else None,
                             bias=bool(r.get("bias")))


def load_model(directory: str | Path, device="cpu") -> LandmarkModel:
    """The landmark model saved in ``directory`` (by ``equinv fit``), on ``device``."""
    d = Path(directory)
    meta = _read_meta(d)
    tensors = _read_weights(d / WEIGHTS)
    try:
        spec = FeatureSpec.from_dict(meta["features"])
        r = meta["regressor"]
        source = source_skeleton(spec, meta.get("source_config") or {}, "cpu")
        reg = _head_skeleton(r, tensors)
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"malformed model description ({type(e).__name__}: {e})", d / META) from None
    _load_state(source, {k[7:]: v for k, v in tensors.items() if k.startswith("source.")}, "feature source",
                d / WEIGHTS)
    _load_state(reg, {k[10:]: v for k, v in tensors.items() if k.startswith("regressor.")}, "regressor", d / WEIGHTS)
    reg.eval()
    return LandmarkModel(source, reg, meta).to(device)
