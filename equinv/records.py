"""Run records: what every evaluation or training JSON carries besides its numbers, written atomically.

Evaluation (``equinv.evaluate``) writes records and report pages (``equinv.report``) read them; this module is
below both, so evaluation never imports the report layer.
"""

from __future__ import annotations

import json
import math
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torchvision

from equinv.outputs import atomic_path
from equinv.version import __version__

#: Test images saved (as their final views) with every evaluation, for the report's figures.
N_SHOW = 16


def software_versions() -> dict:
    """Versions of equinv and the libraries that produce its numbers, the platform and the device."""
    import sklearn

    return {
        "equinv": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
        "torchvision": torchvision.__version__, "numpy": np.__version__, "scikit-learn": sklearn.__version__,
        "platform": platform.platform(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }


def run_record(config: dict, specs: list[str], seed: int) -> dict:
    """``{"config", "datasets", "seed", "versions", "created"}`` for an evaluation's JSON."""
    return {
        "config": config,
        "datasets": list(specs),
        "seed": seed,
        "versions": software_versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample std (ddof 1; 0 for one value) of the finite values; ``(None, None)`` when none are."""
    v = [x for x in values if x is not None and not math.isnan(x)]
    if not v:
        return None, None
    a = np.asarray(v, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def write_json(path: str | Path, obj, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON atomically (temporary file, then rename); non-JSON values become strings."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, default=str) + ("\n" if indent is not None else ""))
    return Path(path)


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write compressed arrays atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return Path(path)
