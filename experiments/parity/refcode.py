"""Import the reference implementation (github.com/cvl-umass/contrast-landmark) from a checkout, on a CPU.

Nothing of the reference is copied here: its modules are imported from ``--reference-dir`` at run time.
What this module changes, all at run time and only in the importing process (the checkout stays as
cloned):

- CPU shims when CUDA is absent: ``Tensor.cuda`` / ``Module.cuda`` return their object unchanged and
  ``torch.cuda.synchronize`` does nothing (the reference calls ``.cuda()`` unconditionally in
  ``train_moco.py``, ``NCE/NCEAverage.py`` and ``NCE/NCECriterion.py``). ``nn.DataParallel`` without GPUs
  calls its module directly, i.e. one BN group, which is what the reference computes on one device.
- ``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python``: ``tensorboard_logger`` (imported by
  ``train_moco.py``) ships protobuf code too old for the C implementation.

Its third-party imports (``pandas<3`` for ``delim_whitespace``, ``tensorboard_logger``, ``torchfile``)
must be importable, e.g. ``pip install --target DIR 'pandas<3' tensorboard_logger torchfile`` and
``PYTHONPATH=DIR``.

Weights: equinv's :class:`~equinv.models.backbones.Encoder` and the reference's ``InsResNet18/50`` are
the same network (torchvision layer names; the reference wraps them as ``encoder.module.*`` and calls
the head ``fc``), so state dicts map one to one (:func:`equinv_to_reference`).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from equinv.errors import InputError

REQUIRED = ("train_moco.py", "NCE/NCEAverage.py", "models/resnet.py", "models/keypoint_prediction.py")


def use_reference(ref_dir: str | Path) -> Path:
    """Put the reference checkout on ``sys.path`` and install the CPU shims; returns its path."""
    ref = Path(ref_dir).resolve()
    missing = [f for f in REQUIRED if not (ref / f).is_file()]
    if missing:
        raise InputError(f"not a contrast-landmark checkout (missing {', '.join(missing)})", ref)
    os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
    if str(ref) not in sys.path:
        sys.path.insert(0, str(ref))
    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
        nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
        torch.cuda.synchronize = lambda *a, **k: None  # type: ignore[assignment]
    # the reference's torch-1.4 idioms (Tensor.add_(Number, Tensor), meshgrid without indexing) still work
    warnings.filterwarnings("ignore", category=UserWarning, message=r".*(add_|meshgrid|pin_memory).*")
    warnings.filterwarnings("ignore", category=FutureWarning)
    return ref


def equinv_to_reference(encoder_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """An equinv ``Encoder`` state dict (``backbone.*``, ``head.fc.*``) in the reference's
    ``InsResNet`` names (``encoder.module.*``, ``encoder.module.fc.*``)."""
    out = {}
    for k, v in encoder_state.items():
        if k.startswith("backbone."):
            out["encoder.module." + k[len("backbone."):]] = v
        elif k.startswith("head.fc."):
            out["encoder.module.fc." + k[len("head.fc."):]] = v
        else:
            raise KeyError(f"unexpected encoder key {k!r} (only the linear head maps to the reference)")
    return out


def reference_encoder(arch: str, pool_size: int = 3) -> nn.Module:
    """The reference's ``InsResNet18`` / ``InsResNet50`` (``width=1``) for ``arch``."""
    from models.resnet import InsResNet18, InsResNet50  # the reference's module

    builders = {"resnet18": InsResNet18, "resnet50": InsResNet50}
    if arch not in builders:
        raise ValueError(f"reference encoder for {arch!r} not wired up; use one of {sorted(builders)}")
    return builders[arch](width=1, pool_size=pool_size)


def initial_moco_state(arch: str, seed: int, queue: int, momentum: float, temperature: float,
                       bn_groups: int = 1) -> tuple[dict[str, Tensor], Tensor]:
    """The query encoder's state and the queue that ``equinv pretrain --seed SEED`` starts from.

    ``equinv pretrain`` seeds torch with ``--seed`` right before it builds :class:`~equinv.models.moco.MoCo`,
    so building it the same way here gives the same initial weights and queue.
    """
    from equinv.models.moco import MoCo

    torch.manual_seed(seed)
    moco = MoCo(arch, dim=128, head="linear", queue_size=queue, momentum=momentum,
                temperature=temperature, bn_groups=bn_groups)
    return {k: v.clone() for k, v in moco.encoder_q.state_dict().items()}, moco.queue.clone()


def save_reference_backbone(model_state: dict[str, Tensor], arch: str, path: str | Path) -> Path:
    """Write the reference's ``ckpt['model']`` as an equinv backbone file (torchvision names, no fc).

    Loading goes through :func:`equinv.models.backbones.load_backbone` (strict), so a key that does not
    map is an error rather than a silently random layer.
    """
    from equinv.models.backbones import Encoder, load_backbone, save_backbone

    enc = Encoder(arch)
    load_backbone(enc, dict(model_state))
    return save_backbone(enc, path)
