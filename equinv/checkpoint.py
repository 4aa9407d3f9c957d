"""Checkpoints without pickle: tensors in safetensors, everything else as JSON in its metadata.

A checkpoint is one ``.safetensors`` file written atomically and reproducibly
(:func:`equinv.safefile.write_safetensors`), so a run killed mid-write leaves the previous checkpoint
intact and two identical runs write identical bytes. Loading never unpickles anything: model and
optimizer tensors come from safetensors, scalars and optimizer hyper-parameters from JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from equinv.errors import InputError
from equinv.safefile import read_safetensors, write_safetensors

META_KEY = "equinv"


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for pid, st in state["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim/{pid}/{k}"] = v
            else:
                scalars[f"{pid}/{k}"] = v
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optim/"):
            _, pid, k = key.split("/", 2)
            state.setdefault(int(pid), {})[k] = v
    for key, v in meta["scalars"].items():
        pid, k = key.split("/", 1)
        state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    path: str | Path,
    model: dict[str, torch.Tensor],
    optimizer: dict | None = None,
    extra_tensors: dict[str, torch.Tensor] | None = None,
    meta: dict | None = None,
) -> Path:
    """Write ``model`` (a state dict), optimizer state, extra tensors (e.g. RNG states) and JSON ``meta``."""
    tensors = {f"model/{k}": v for k, v in model.items()}
    info: dict[str, Any] = {"meta": meta or {}}
    if optimizer is not None:
        t, o = _flatten_optimizer(optimizer)
        tensors.update(t)
        info["optimizer"] = o
    for k, v in (extra_tensors or {}).items():
        tensors[f"extra/{k}"] = v
    return write_safetensors(path, tensors, {META_KEY: json.dumps(info, sort_keys=True)})


class Checkpoint:
    """A loaded checkpoint: ``model`` state dict, ``optimizer`` state (or None), ``extra`` tensors, ``meta``."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu"):
        path = Path(path)
        tensors, raw = read_safetensors(path, device, what="checkpoint")
        if META_KEY not in raw:
            raise InputError("not an equinv checkpoint (no equinv metadata)", path)
        info = json.loads(raw[META_KEY])
        self.path = path
        self.meta: dict = info["meta"]
        self.model = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
        self.extra = {k[6:]: v for k, v in tensors.items() if k.startswith("extra/")}
        self.optimizer = _unflatten_optimizer(tensors, info["optimizer"]) if "optimizer" in info else None
