"""Export frozen-backbone hypercolumns of a whole dataset to disk, streaming, in bounded memory.

:func:`export_features` runs a frozen trunk over every image of a dataset (its final view, e.g. the
centre 96² of the 136² face canvas, :func:`~equinv.data.dataset.final_view`) batch by batch and writes
each batch straight into a file whose full size is allocated up front, so memory holds one batch only:

* ``FILE.npy``, dense (default for ``.npy``): the hypercolumn upsampled bilinearly to ``size``²,
  ``(N, C, S, S)`` in ``dtype``, through :func:`numpy.lib.format.open_memmap`.
* ``FILE.npy`` with ``factorised=True``: one ``.npy`` per tap at its native resolution
  (``FILE.layer4.npy`` ``(N, 2048, 3, 3)``, ... for ResNet50 at 96 px), deepest first.
* ``FILE.safetensors``, factorised (default for ``.safetensors``): one tensor per tap at its native
  resolution, plus ``index`` (N,) int64, ``landmarks`` (N, K, 2) float32 in the final-view pixel frame
  (0 where invisible) and ``visible`` (N, K) bool. ``factorised=False`` stores one ``hypercolumn``
  tensor instead. The file is a standard safetensors file (``safetensors.safe_open`` reads it lazily);
  it is written by :class:`SafetensorsStreamWriter`, which lays out the header first and then fills
  each tensor's rows in place, so no tensor is ever held whole in memory.

Native maps are much smaller than the upsampled hypercolumn: ResNet50, layer 4, 48² grid: 3840·48² =
8.8M values per image dense vs 2048·9 + 1024·36 + 512·144 + 256·576 = 0.27M factorised (33× smaller).
A :class:`~equinv.models.hypercolumn.FactorisedConv1x1` (e.g. the landmark regressor) consumes them
directly.

Next to the output a JSON sidecar (``FILE.json``) records the dataset spec, architecture, weights, taps
(deepest first) and their channels and native sizes, grid size, input and feature normalisation, dtype,
the files and their shapes, and the image order (dataset index and path of every row).

Normalisation: inputs use face statistics for face kinds and ImageNet statistics for
``cub``/``folder``/``coco`` (:func:`input_stats_for_kind`). ``normalize=True`` L2-normalises each layer
block per pixel, as the reference's matching descriptor (protocol §5a): after upsampling for dense output,
at native resolution for factorised output (the sidecar says which).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numpy.lib.format import open_memmap
from tqdm.auto import tqdm

from equinv.augment.photometric import FACE_MEAN, FACE_STD, IMAGENET_MEAN, IMAGENET_STD, normalize
from equinv.data.dataset import LandmarkDataset, final_view, make_loader
from equinv.data.preprocess import Preprocess
from equinv.data.spec import parse_spec, read_index
from equinv.errors import InputError, SkipLog
from equinv.models.hypercolumn import Hypercolumn, frozen_trunk, reference_taps

#: Dataset kinds whose images are normalised with ImageNet statistics (bird / generic image loaders).
IMAGENET_KINDS = frozenset({"cub", "folder", "coco"})

DTYPES = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}
_ST_DTYPE = {torch.float16: "F16", torch.float32: "F32", torch.bfloat16: "BF16", torch.int64: "I64",
             torch.bool: "BOOL"}


def input_stats_for_kind(kind: str) -> tuple[str, tuple[float, ...], tuple[float, ...]]:
    """``(name, mean, std)``: ImageNet statistics for cub/folder/coco, face statistics otherwise."""
    if kind.lower() in IMAGENET_KINDS:
        return "imagenet", IMAGENET_MEAN, IMAGENET_STD
    return "face", FACE_MEAN, FACE_STD


# ----------------------------------------------------------------------------- streaming safetensors
class SafetensorsStreamWriter:
    """Write a safetensors file whose tensors are filled in row blocks, in any order, without holding them.

    The safetensors layout is ``u64 header length | JSON header | raw little-endian data``; with every
    shape known up front the header (and each tensor's byte range) is fixed, so the file is allocated at
    its final size and :meth:`write` puts rows ``[start, start + len)`` of a tensor at their offset.

    Args:
        path: output file (written to a temporary name; :meth:`close` renames it into place).
        tensors: ``name -> (torch dtype, shape)``; the first axis is the row axis.
        metadata: string key/values stored under ``__metadata__``.
    """

    def __init__(self, path: str | Path, tensors: dict[str, tuple[torch.dtype, tuple[int, ...]]],
                 metadata: dict[str, str] | None = None):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        header: dict[str, dict] = {}
        self.layout: dict[str, tuple[int, int, torch.dtype, tuple[int, ...]]] = {}
        offset = 0
        for name, (dtype, shape) in tensors.items():
            if dtype not in _ST_DTYPE:
                raise ValueError(f"unsupported dtype {dtype} for {name}")
            shape = tuple(int(s) for s in shape)
            itemsize = torch.empty((), dtype=dtype).element_size()
            nbytes = math.prod(shape) * itemsize
            header[name] = {"dtype": _ST_DTYPE[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            row = math.prod(shape[1:]) * itemsize if shape else nbytes
            self.layout[name] = (offset, row, dtype, shape)
            offset += nbytes
        if metadata:
            header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # data start aligned to 8 bytes, as safetensors writes it
        self.data_start = 8 + len(raw)
        self.size = self.data_start + offset
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.tmp, "wb")  # noqa: SIM115 - closed in close()
        self.fh.write(len(raw).to_bytes(8, "little"))
        self.fh.write(raw)
        self.fh.truncate(self.size)  # sparse where the filesystem allows

    def write(self, name: str, start: int, rows: torch.Tensor) -> None:
        """Put ``rows`` (shape ``(n, *shape[1:])``) at rows ``start .. start + n`` of tensor ``name``."""
        offset, row, dtype, shape = self.layout[name]
        if tuple(rows.shape[1:]) != shape[1:] or start < 0 or start + rows.shape[0] > shape[0]:
            raise ValueError(f"{name}: rows {tuple(rows.shape)} at {start} do not fit {shape}")
        data = rows.detach().to("cpu", dtype).contiguous()
        buf = data.view(torch.uint8).numpy() if dtype == torch.bfloat16 else data.numpy()
        self.fh.seek(self.data_start + offset + start * row)
        self.fh.write(memoryview(np.ascontiguousarray(buf)).cast("B"))

    def close(self) -> Path:
        self.fh.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self.fh.close()
        self.tmp.unlink(missing_ok=True)


class _NpyWriter:
    """Pre-allocated ``.npy`` memory maps, one per output array, renamed into place on close."""

    def __init__(self, files: dict[str, tuple[Path, np.dtype, tuple[int, ...]]]):
        self.files = files
        self.maps = {}
        for name, (path, dtype, shape) in files.items():
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            path.parent.mkdir(parents=True, exist_ok=True)
            self.maps[name] = (tmp, open_memmap(tmp, mode="w+", dtype=dtype, shape=shape))

    def write(self, name: str, start: int, rows: torch.Tensor) -> None:
        _, arr = self.maps[name]
        arr[start : start + rows.shape[0]] = rows.detach().cpu().numpy().astype(arr.dtype, copy=False)

    def close(self) -> None:
        for name, (tmp, arr) in self.maps.items():
            arr.flush()
            del arr
            os.replace(tmp, self.files[name][0])
        self.maps.clear()

    def abort(self) -> None:
        for tmp, _ in self.maps.values():
            tmp.unlink(missing_ok=True)
        self.maps.clear()


# ----------------------------------------------------------------------------- export
@dataclass
class ExportResult:
    """What :func:`export_features` wrote: the data files, the sidecar, and the sidecar's content."""

    files: dict[str, Path]
    sidecar: Path
    info: dict


def _pick_device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def export_features(
    data: str,
    out: str | Path,
    *,
    backbone: str | Path | None = None,
    arch: str = "resnet18",
    size: int = 48,
    layers: int = 4,
    normalize_features: bool = False,
    dtype: str = "float16",
    batch: int = 32,
    factorised: bool | None = None,
    image_size: int = 96,
    max_images: int | None = None,
    device: str | None = None,
    seed: int = 0,
    workers: int = 0,
    skip_bad: bool = False,
    progress: bool = True,
) -> ExportResult:
    """Hypercolumns (or per-layer native maps) of every image of ``data``, streamed to ``out``.

    Args:
        data: dataset spec ``KIND:PATH[?k=v]``.
        out: ``.npy`` or ``.safetensors`` file (see the module docstring for the layouts).
        backbone: pretraining run dir, weights file, or ``None``/``"random"`` for the seeded random init.
        arch: trunk architecture.
        size: grid side of the dense hypercolumn (48 for regression, 96 for matching).
        layers: the reference's ``--layer`` (1..5 taps, deepest first).
        normalize_features: L2-normalise each layer block per pixel.
        dtype: ``float16`` (default), ``float32``, or ``bfloat16`` (safetensors only).
        batch: images per forward pass (memory holds one batch).
        factorised: per-layer native maps instead of the dense hypercolumn; default: ``True`` for
            ``.safetensors``, ``False`` for ``.npy``.
        image_size: final view side (96, the protocol's).
        max_images: only the first N images of the dataset (in dataset order).
    """
    out = Path(out)
    fmt = out.suffix.lower()
    if fmt not in (".npy", ".safetensors"):
        raise InputError(f"output must end in .npy or .safetensors, got {out.name!r}")
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    if dtype == "bfloat16" and fmt == ".npy":
        raise InputError("numpy has no bfloat16; use --dtype float16/float32 or a .safetensors output")
    if batch < 1 or size < 1:
        raise InputError("--batch and --size must be positive")
    if not 1 <= layers <= 5:
        raise InputError(f"--layers must be 1..5, got {layers}")
    factorised = (fmt == ".safetensors") if factorised is None else factorised
    tdtype = DTYPES[dtype]
    dev = _pick_device(device)
    weights = None if backbone in (None, "", "random", "none") else backbone

    spec = parse_spec(data)
    log = SkipLog(skip_bad=skip_bad)
    ds = LandmarkDataset(read_index(spec, log), Preprocess(size=image_size))
    ds.prepare(log, progress=progress)
    n = len(ds) if max_images is None else min(len(ds), max_images)
    if n == 0:
        raise InputError(f"no images to export in {spec}")
    stats_name, mean, std = input_stats_for_kind(spec.kind)

    trunk = frozen_trunk(arch, weights, seed=seed)
    hc = Hypercolumn(trunk, reference_taps(layers), size=size, normalize=normalize_features and factorised)
    hc = hc.to(dev).eval()
    with torch.no_grad():
        probe = hc.maps(torch.zeros(1, 3, image_size, image_size, device=dev))
    native = [tuple(m.shape[-2:]) for m in probe]

    stem = out.with_suffix("")
    if factorised:
        shapes = {t: (n, c, *hw) for t, c, hw in zip(hc.taps, hc.channels, native, strict=True)}
    else:
        shapes = {"hypercolumn": (n, hc.dim, size, size)}
    k = len(ds.names)
    if fmt == ".npy":
        files = {name: (stem.with_name(f"{stem.name}.{name}.npy") if factorised else out) for name in shapes}
        writer = _NpyWriter({name: (files[name], np.dtype(dtype), shp) for name, shp in shapes.items()})
    else:
        files = {name: out for name in shapes}
        tensors = {name: (tdtype, shp) for name, shp in shapes.items()}
        tensors.update(index=(torch.int64, (n,)), landmarks=(torch.float32, (n, k, 2)), visible=(torch.bool, (n, k)))
        meta = {"format": "equinv-features", "arch": arch, "taps": ",".join(hc.taps), "size": str(size),
                "factorised": str(factorised).lower(), "data": str(spec)}
        writer = SafetensorsStreamWriter(out, tensors, meta)

    info = {
        "format": "equinv-features",
        "data": str(spec),
        "kind": spec.kind,
        "arch": arch,
        "weights": "random" if weights is None else str(Path(weights).resolve()),
        "seed": seed if weights is None else None,
        "taps": list(hc.taps),
        "layers": layers,
        "channels": list(hc.channels),
        "native_sizes": [list(hw) for hw in native],
        "dim": hc.dim,
        "size": size,
        "factorised": factorised,
        "image_size": image_size,
        "preprocess": ds.pre.as_dict(),
        "input_normalization": {"stats": stats_name, "mean": list(mean), "std": list(std)},
        "feature_normalization": (
            None if not normalize_features
            else "per-layer L2 per pixel at native resolution (before upsampling)" if factorised
            else f"per-layer L2 per pixel after bilinear upsampling to {size}x{size}"
        ),
        "upsampling": "bilinear, align_corners=False",
        "dtype": dtype,
        "files": {name: {"path": files[name].name, "shape": list(shp)} for name, shp in shapes.items()},
        "n_images": n,
        "skipped": [{"path": str(s.path), "reason": s.reason} for s in log.skips],
    }

    nonfinite = 0
    loader = make_loader(ds, batch_size=batch, shuffle=False, workers=workers, sampler=range(n))
    bar = tqdm(total=n, desc="features", unit="img", disable=not progress)
    order_index: list[int] = []
    start = 0
    try:
        with torch.no_grad():
            for b in loader:
                view = final_view(b, ds.pre)
                x = normalize(view["image"].to(dev).float().div_(255.0), mean, std)
                maps = hc.maps(x)  # normalised at native resolution only when factorised
                if factorised:
                    outs = dict(zip(hc.taps, maps, strict=True))
                else:
                    ups = [F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False) for m in maps]
                    if normalize_features:
                        ups = [F.normalize(u, dim=1) for u in ups]
                    outs = {"hypercolumn": torch.cat(ups, dim=1)}
                for name, t in outs.items():
                    t = t.to(tdtype)
                    nonfinite += int((~torch.isfinite(t)).sum())
                    writer.write(name, start, t)
                m = x.shape[0]
                if fmt == ".safetensors":
                    writer.write("index", start, view["index"].long())
                    writer.write("landmarks", start, view["landmarks"].float())
                    writer.write("visible", start, view["visible"].bool())
                order_index.extend(int(i) for i in view["index"])
                start += m
                bar.update(m)
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    writer.close()
    info["nonfinite_values"] = nonfinite  # > 0 means the dtype overflowed (use --dtype float32)
    info["images"] = [{"index": j, "path": str(ds.index.records[j].path)} for j in order_index]
    sidecar = stem.with_name(f"{stem.name}.json")
    tmp = sidecar.with_name(f".{sidecar.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(info, indent=1) + "\n")
    os.replace(tmp, sidecar)
    return ExportResult({name: files[name] for name in shapes}, sidecar, info)
