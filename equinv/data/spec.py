"""Dataset specs ``KIND:PATH[?key=value&...]``, read by the readers of :data:`equinv.data.readers.READERS`.

Examples::

    mtfl:../shared/data/mtfl                      # training.txt (default list)
    mtfl:../shared/data/mtfl?list=testing.txt     # any MTFL-format list inside PATH
    celeba:../shared/data/celeba?split=mafl_test
    cub:../shared/data/cub/CUB_200_2011?split=all
    folder:/photos/birds

Every command that takes data accepts a spec; :func:`read_index` turns it into a validated
:class:`~equinv.data.sample.LandmarkIndex`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np

from equinv.data.image_io import image_size
from equinv.data.readers import READERS
from equinv.data.sample import LandmarkIndex, Record
from equinv.errors import InputError, SkipLog


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed ``KIND:PATH[?key=value&...]`` dataset spec."""
    kind: str
    path: Path
    options: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        q = "&".join(f"{k}={v}" for k, v in self.options)
        return f"{self.kind}:{self.path}" + (f"?{q}" if q else "")


def parse_spec(text: str) -> DatasetSpec:
    """Parse ``KIND:PATH[?k=v&...]``. Raises :class:`InputError` for an unknown KIND or a bad form."""
    kinds = ", ".join(sorted(READERS))
    if ":" not in text:
        raise InputError(f"dataset spec {text!r} is not KIND:PATH (kinds: {kinds})")
    kind, rest = text.split(":", 1)
    kind = kind.strip().lower()
    if kind not in READERS:
        raise InputError(f"unknown dataset kind {kind!r} in {text!r} (kinds: {kinds})")
    path, _, query = rest.partition("?")
    if not path:
        raise InputError(f"dataset spec {text!r} has an empty PATH")
    try:
        opts = tuple(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError:
        raise InputError(f"dataset spec {text!r}: options must look like ?key=value&key=value") from None
    repeated = sorted({k for i, (k, _) in enumerate(opts) if any(k == j for j, _ in opts[:i])})
    if repeated:  # one value each: which one a repeated key meant is a guess
        raise InputError(f"dataset spec {text!r}: option(s) {', '.join(repeated)} given more than once")
    return DatasetSpec(kind, Path(path).expanduser(), opts)


def split_index(text: str) -> tuple[str, int]:
    """``SPEC#N`` → ``(SPEC, N)`` (one image of a dataset); no ``#N`` suffix → ``(SPEC, 0)``."""
    head, sep, tail = text.rpartition("#")
    if sep and tail.strip().lstrip("-").isdigit():
        return head, int(tail)
    return text, 0


def read_index(spec: str | DatasetSpec, log: SkipLog | None = None, validate: bool = True) -> LandmarkIndex:
    """Read a dataset spec into a :class:`LandmarkIndex`.

    Args:
        spec: ``KIND:PATH[?options]`` or a parsed :class:`DatasetSpec`.
        log: where bad rows go; default raises on the first bad input.
        validate: also open every image header to check the file exists, is an image, and that no
            landmark lies far outside it (see :func:`validate_records`).
    """
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    log = log if log is not None else SkipLog()
    info = READERS[spec.kind]
    if info.path_must_exist and not spec.path.exists():
        raise InputError(f"dataset path does not exist (spec {spec})", spec.path)
    options = dict(spec.options)
    generic = {k: options.pop(k) for k in list(options) if k in GENERIC_OPTIONS}
    index = info.fn(spec.path, options, log)
    index.records = select_records(index.records, generic, str(spec))
    if options:
        known = ", ".join(f"{k} ({v})" for k, v in info.options.items()) or "none"
        raise InputError(f"unknown option(s) {sorted(options)} for kind {spec.kind!r}; options: {known}")
    if validate:
        index.records = validate_records(index.records, log)
    if not index.records:
        raise InputError(f"no usable samples in {spec}", spec.path)
    return index


#: Options every kind accepts; applied to the reader's records in this order (before image checks).
GENERIC_OPTIONS = {
    "holdout": "carve a seeded split: a fraction (0.1) or a count (1000) of the rows goes to part=val",
    "part": "train (default: the rows not held out) | val (the held-out rows); needs holdout",
    "holdout_seed": "seed of the holdout permutation (default 0)",
    "limit": "keep only the first N rows (after the holdout split)",
}


def select_records(records: list[Record], options: dict[str, str], where: str = "") -> list[Record]:
    """Apply the generic ``holdout`` / ``part`` / ``holdout_seed`` / ``limit`` options to a reader's rows.

    The holdout split is a seeded permutation of the rows as the reader lists them, so ``part=train`` and
    ``part=val`` of the same ``holdout`` / ``holdout_seed`` are disjoint and together give every row.
    """
    def number(key: str, lowest: int = 0) -> float:
        """A finite number; a count (anything but a holdout fraction) must be a whole number ≥ ``lowest``."""
        raw = options[key]
        try:
            v = float(raw)
        except ValueError:
            raise InputError(f"dataset spec {where}: ?{key}= must be a number, got {raw!r}") from None
        if not math.isfinite(v):
            raise InputError(f"dataset spec {where}: ?{key}= must be a finite number, got {raw!r}")
        if not (key == "holdout" and 0 < v < 1) and (v != int(v) or v < lowest):
            what = "a fraction in (0, 1) or a whole count" if key == "holdout" else f"a whole number, at least {lowest}"
            raise InputError(f"dataset spec {where}: ?{key}= must be {what}, got {raw!r}")
        return v

    if "part" in options and "holdout" not in options:
        raise InputError(f"dataset spec {where}: ?part= needs ?holdout=")
    if "holdout" in options:
        h = number("holdout", lowest=-(2**62))  # out-of-range counts get the message about both sides below
        n = len(records)
        count = int(round(h * n)) if 0 < h < 1 else int(h)
        if not 0 < count < n:
            raise InputError(f"dataset spec {where}: ?holdout={options['holdout']} must leave rows on both sides "
                             f"of the split ({n} rows)")
        seed = int(number("holdout_seed")) if "holdout_seed" in options else 0
        perm = np.random.default_rng(seed).permutation(n)
        part = options.get("part", "train")
        if part not in ("train", "val"):
            raise InputError(f"dataset spec {where}: ?part= must be train or val, got {part!r}")
        held = np.zeros(n, bool)
        held[perm[:count]] = True
        keep = held if part == "val" else ~held
        records = [r for r, k in zip(records, keep, strict=True) if k]
    if "limit" in options:
        records = records[: int(number("limit", lowest=1))]
    return records


def validate_records(records: list[Record], log: SkipLog, far: float = 0.5) -> list[Record]:
    """Keep records whose image header reads and whose visible points lie near the image.

    A point is *far outside* when it is more than ``far`` × the image side beyond an edge: such rows
    are almost always a wrong column order or a wrong scale, not a real annotation. Image sizes are
    stored in ``record.meta["size"]`` as ``(W, H)``.
    """
    kept = []
    for r in records:
        file, _, line = r.where.rpartition(":")
        file, line = (file, int(line)) if line.isdigit() else (r.where, None)
        try:
            try:
                w, h = image_size(r.path)
            except InputError as e:  # name the annotation that points at the image, not only the image
                if file == str(r.path):
                    raise
                raise InputError(f"{e.path}: {e.message}", file, line) from None
            r.meta["size"] = (w, h)
            if r.visible.any():
                p = r.landmarks[r.visible]
                lo = np.array([-far * w, -far * h])
                hi = np.array([(1 + far) * w, (1 + far) * h])
                bad = ~((p >= lo) & (p <= hi)).all(axis=1)
                if bad.any():
                    i = int(np.flatnonzero(r.visible)[np.flatnonzero(bad)[0]])
                    x, y = r.landmarks[i]
                    raise InputError(f"landmark {i} ({r.names[i]}) at ({x:.1f}, {y:.1f}) is far outside the "
                                     f"{w}x{h} image {r.path}", file, line)
        except InputError as e:
            log.bad(e)
            continue
        kept.append(r)
    return kept


def describe_kinds() -> str:
    """Help text listing every KIND and its options."""
    lines = []
    for k in sorted(READERS):
        info = READERS[k]
        lines.append(f"  {k:10s} {info.help}")
        for opt, h in info.options.items():
            lines.append(f"  {'':10s}   ?{opt}=  {h}")
    lines.append("  options every kind accepts:")
    for opt, h in GENERIC_OPTIONS.items():
        lines.append(f"  {'':10s}   ?{opt}=  {h}")
    return "\n".join(lines)
