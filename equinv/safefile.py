"""Safetensors files written atomically and reproducibly, and read back with one-line errors.

``write_safetensors`` writes to a temporary file beside the target, syncs it and renames it over
the target, so a reader (or a run killed mid-write) only ever sees a complete file. safetensors keeps
the string metadata in a hash map whose order changes from call to call; the header is rewritten
with the metadata keys sorted, so identical tensors and metadata give byte-identical files.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from equinv.errors import InputError
from equinv.outputs import TMP_INFIX, tmp_path


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write ``tensors`` (copied to CPU, contiguous) and string ``metadata`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    _sort_metadata(tmp)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def _sort_metadata(path: Path) -> None:
    """Rewrite the header of a safetensors file in place with its ``__metadata__`` keys sorted."""
    with open(path, "r+b") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
        meta = header.pop("__metadata__", None)
        if not meta:
            return
        # Same JSON as safetensors writes (compact, UTF-8 unescaped), so the length does not change.
        new = json.dumps({"__metadata__": dict(sorted(meta.items())), **header}, separators=(",", ":"),
                         ensure_ascii=False).encode()
        if len(new) <= n:
            fh.seek(8)
            fh.write(new + b" " * (n - len(new)))


def read_safetensors(path: str | Path, device: str | torch.device = "cpu", what: str = "file"
                     ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file; a missing or unreadable file is an InputError.

    ``what`` names the file in the error (``"checkpoint not found"``).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found", path)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise InputError(f"not a readable safetensors file ({e})", path) from None


def stale_temporaries(folder: Path) -> list[Path]:
    """Temporary files a killed writer left in ``folder`` (``.NAME.tmpPID`` and the older ``NAME.tmp``)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and (p.name.startswith(".") and TMP_INFIX in p.name or p.suffix == TMP_INFIX))
