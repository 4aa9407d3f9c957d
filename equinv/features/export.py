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

Any feature source can be exported (:class:`~equinv.features.spec.FeatureSpec`; its ``grid``, default 48, is the
dense grid). Normalisation: inputs use the source's statistics, else face statistics for face kinds and ImageNet
statistics for ``cub``/``folder``/``coco`` (:mod:`equinv.features.stats`). ``normalize=True`` L2-normalises each layer
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

from equinv.data.dataset import LandmarkDataset, final_view, make_loader
from equinv.data.preprocess import Preprocess
from equinv.data.spec import parse_spec, read_index
from equinv.errors import InputError, SkipLog
from equinv.features.descriptors import dense_features, descriptor_maps
from equinv.features.sources import build_source
from equinv.features.spec import FeatureSpec
from equinv.features.stats import input_stats, prepare_input, stats_for_kind
from equinv.records import write_json

DTYPES = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}
_ST_DTYPE = {torch.float16: "F16", torch.float32: "F32", torch.bfloat16: "BF16", torch.int64: "I64",
             torch.bool: "BOOL"}


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
        if data.numel() == 0:  # e.g. the landmarks of unlabeled images: nothing to write (and memoryview refuses it)
            return
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


def _check(out: Path, dtype: str, batch: int) -> str:
    fmt = out.suffix.lower()
    if fmt not in (".npy", ".safetensors"):
        raise InputError(f"output must end in .npy or .safetensors, got {out.name!r}")
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    if dtype == "bfloat16" and fmt == ".npy":
        raise InputError("numpy has no bfloat16; use --dtype float16/float32 or a .safetensors output")
    if batch < 1:
        raise InputError("--batch must be positive")
    return fmt


def _open_writer(out: Path, fmt: str, shapes: dict, dtype: str, n: int, k: int, meta: dict, factorised: bool):
    """The streaming writer of ``shapes`` (plus index / landmarks / visible in safetensors) and the file of each."""
    stem = out.with_suffix("")
    if fmt == ".npy":
        files = {name: (stem.with_name(f"{stem.name}.{name}.npy") if factorised else out) for name in shapes}
        return _NpyWriter({name: (files[name], np.dtype(dtype), shp) for name, shp in shapes.items()}), files
    tensors = {name: (DTYPES[dtype], shp) for name, shp in shapes.items()}
    tensors.update(index=(torch.int64, (n,)), landmarks=(torch.float32, (n, k, 2)), visible=(torch.bool, (n, k)))
    return SafetensorsStreamWriter(out, tensors, meta), {name: out for name in shapes}


def _outputs(source, x: torch.Tensor, factorised: bool, normalize: bool, size: int) -> dict[str, torch.Tensor]:
    """One batch's tensors to write: per-tap native maps, or the dense (upsampled) features."""
    if factorised:
        maps = source.maps(x)
        return dict(zip(source.taps, [F.normalize(m, dim=1) for m in maps] if normalize else maps, strict=True))
    return {"hypercolumn": descriptor_maps(source, x, size, True) if normalize else dense_features(source, x, size)}


def _info(spec, data, kind: str, source, native, size: int, factorised: bool, normalize: bool, image_size: int,
          pre, stats: str, dtype: str, files: dict, shapes: dict, n: int, log) -> dict:
    mean, std = input_stats(stats)
    return {
        "format": "equinv-features", "data": str(data), "kind": kind, "features": spec.as_dict(),
        "arch": spec.arch, "weights": "random" if spec.weights is None else str(Path(spec.weights).resolve()),
        "seed": spec.seed if spec.weights is None else None, "taps": list(source.taps), "layers": spec.layers,
        "channels": list(source.channels), "native_sizes": [list(hw) for hw in native],
        "dim": sum(source.channels), "size": size, "factorised": factorised, "image_size": image_size,
        "preprocess": pre.as_dict(), "input_normalization": {"stats": stats, "mean": list(mean), "std": list(std)},
        "feature_normalization": (
            None if not normalize
            else "per-layer L2 per pixel at native resolution (before upsampling)" if factorised
            else f"per-layer L2 per pixel after bilinear upsampling to {size}x{size}"
        ),
        "upsampling": "bilinear, align_corners=False", "dtype": dtype,
        "files": {name: {"path": files[name].name, "shape": list(shp)} for name, shp in shapes.items()},
        "n_images": n, "skipped": [{"path": str(s.path), "reason": s.reason} for s in log.skips],
    }


def _stream(ds, source, writer, n: int, *, batch: int, workers: int, stats: str, device, fmt: str,
            factorised: bool, normalize: bool, size: int, dtype: str, progress: bool) -> tuple[list[int], int]:
    """Write every image's features batch by batch; returns the dataset index of each row and the count of
    non-finite values after the cast to ``dtype``."""
    nonfinite, order, start = 0, [], 0
    loader = make_loader(ds, batch_size=batch, shuffle=False, workers=workers, sampler=range(n))
    with tqdm(total=n, desc="features", unit="img", disable=not progress) as bar, torch.no_grad():
        for b in loader:
            view = final_view(b, ds.pre)
            x = prepare_input(view["image"], None, stats, device)
            for name, t in _outputs(source, x, factorised, normalize, size).items():
                t = t.to(DTYPES[dtype])
                nonfinite += int((~torch.isfinite(t)).sum())
                writer.write(name, start, t)
            if fmt == ".safetensors":
                writer.write("index", start, view["index"].long())
                writer.write("landmarks", start, view["landmarks"].float())
                writer.write("visible", start, view["visible"].bool())
            order.extend(int(i) for i in view["index"])
            start += x.shape[0]
            bar.update(x.shape[0])
    return order, nonfinite


def export_features(data: str, out: str | Path, features: FeatureSpec | None = None, *,
                    normalize_features: bool = False, dtype: str = "float16", batch: int = 32,
                    factorised: bool | None = None, image_size: int = 96, max_images: int | None = None,
                    device: str | None = None, workers: int = 0, skip_bad: bool = False,
                    progress: bool = True) -> ExportResult:
    """The features of every image of ``data`` (per-tap native maps, or dense at ``features.grid``², default 48),
    streamed to ``out`` (``.npy`` or ``.safetensors``, see the module docstring for the layouts).

    ``normalize_features``: L2-normalise each map per pixel; ``factorised``: per-tap native maps instead of the
    dense features (default: ``True`` for ``.safetensors``, ``False`` for ``.npy``); ``max_images``: only the
    first N images of the dataset (in dataset order); ``dtype``: ``float16`` (default), ``float32`` or
    ``bfloat16`` (safetensors only).
    """
    out = Path(out)
    fmt = _check(out, dtype, batch)
    factorised = (fmt == ".safetensors") if factorised is None else factorised
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    source = build_source((features or FeatureSpec()).with_defaults(grid=48, readout="output"), dev)
    spec, size = source.spec, source.spec.grid
    parsed = parse_spec(data)
    log = SkipLog(skip_bad=skip_bad)
    ds = LandmarkDataset(read_index(parsed, log), Preprocess(size=image_size))
    ds.prepare(log, progress=progress)
    n = len(ds) if max_images is None else min(len(ds), max_images)
    if n == 0:
        raise InputError(f"no images to export in {parsed}")
    stats = spec.stats or source.stats or stats_for_kind(parsed.kind)
    with torch.no_grad():
        native = [tuple(m.shape[-2:]) for m in source.maps(torch.zeros(1, 3, image_size, image_size, device=dev))]
    shapes = ({t: (n, c, *hw) for t, c, hw in zip(source.taps, source.channels, native, strict=True)} if factorised
              else {"hypercolumn": (n, sum(source.channels), size, size)})
    meta = {"format": "equinv-features", "arch": spec.arch, "taps": ",".join(source.taps), "size": str(size),
            "factorised": str(factorised).lower(), "data": str(parsed)}
    writer, files = _open_writer(out, fmt, shapes, dtype, n, len(ds.names), meta, factorised)
    info = _info(spec, parsed, parsed.kind, source, native, size, factorised, normalize_features, image_size, ds.pre,
                 stats, dtype, files, shapes, n, log)
    try:
        order, info["nonfinite_values"] = _stream(ds, source, writer, n, batch=batch, workers=workers, stats=stats,
                                                  device=dev, fmt=fmt, factorised=factorised,
                                                  normalize=normalize_features, size=size, dtype=dtype,
                                                  progress=progress)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    info["images"] = [{"index": j, "path": str(ds.index.records[j].path)} for j in order]
    sidecar = write_json(out.with_suffix("").with_name(f"{out.with_suffix('').name}.json"), info, indent=1)
    return ExportResult({name: files[name] for name in shapes}, sidecar, info)
