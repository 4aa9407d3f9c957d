"""What every evaluation JSON carries besides its numbers: config, data, seed, software versions."""

from __future__ import annotations

import platform
import sys
from datetime import UTC, datetime

import torch
import torchvision

import equinv


def software_versions() -> dict:
    import numpy
    import sklearn

    return {
        "equinv": equinv.__version__, "python": sys.version.split()[0], "torch": torch.__version__,
        "torchvision": torchvision.__version__, "numpy": numpy.__version__, "scikit-learn": sklearn.__version__,
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
