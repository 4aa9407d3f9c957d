"""Checkpoints without pickle: tensors in safetensors, everything else as JSON in its metadata.

A checkpoint is one ``.safetensors`` file written atomically (temporary file, fsync, rename), so a
run killed mid-write leaves the previous checkpoint intact. Loading never unpickles anything: model
and optimizer tensors come from safetensors, scalars and optimizer hyper-parameters from JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from equinv.errors import InputError

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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model.items()}
    info: dict[str, Any] = {"meta": meta or {}}
    if optimizer is not None:
        t, o = _flatten_optimizer(optimizer)
        tensors.update({k: v.detach().cpu().contiguous() for k, v in t.items()})
        info["optimizer"] = o
    for k, v in (extra_tensors or {}).items():
        tensors[f"extra/{k}"] = v.detach().cpu().contiguous()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(info)})
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


class Checkpoint:
    """A loaded checkpoint: ``model`` state dict, ``optimizer`` state (or None), ``extra`` tensors, ``meta``."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu"):
        path = Path(path)
        if not path.is_file():
            raise InputError("checkpoint not found", path)
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as f:
                raw = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises its own error types for bad headers
            raise InputError(f"not a readable safetensors checkpoint ({e})", path) from None
        if META_KEY not in raw:
            raise InputError("not an equinv checkpoint (no equinv metadata)", path)
        info = json.loads(raw[META_KEY])
        self.path = path
        self.meta: dict = info["meta"]
        self.model = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
        self.extra = {k[6:]: v for k, v in tensors.items() if k.startswith("extra/")}
        self.optimizer = _unflatten_optimizer(tensors, info["optimizer"]) if "optimizer" in info else None
