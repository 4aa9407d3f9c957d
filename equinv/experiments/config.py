"""Budget configs: ``experiments/configs/{cpu,gpu,smoke}.json`` and ``paper_datasets/*.json`` data overlays.

A budget config is data: the dataset *roles* the plan uses (``data``: ``face_pretrain``, ``face5_train``, …,
as ``KIND:PATH?opts`` specs with ``{root}`` standing for ``--data-root``), their sizes for the time
estimates (``counts``), per-experiment settings (``faces``, ``faces68``, ``birds``) and measured rates
(``rates``). A data overlay replaces some roles (and their counts), e.g. with the paper's own datasets.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from equinv.errors import InputError

#: ``experiments/configs`` at the repository root (beside the ``equinv`` package).
CONFIG_DIR = Path(__file__).resolve().parents[2] / "experiments" / "configs"
BUDGETS = ("cpu", "gpu", "smoke")


def config_path(budget: str) -> Path:
    """The JSON of a named budget, or ``budget`` itself when it is a path to a JSON file."""
    p = Path(budget)
    if p.suffix == ".json":
        if not p.is_file():
            raise InputError(f"budget config {p} not found")
        return p
    if budget not in BUDGETS:
        raise InputError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)} or give a .json file")
    return CONFIG_DIR / f"{budget}.json"


def _substitute(value: Any, root: str) -> Any:
    if isinstance(value, str):
        return value.replace("{root}", root)
    if isinstance(value, list):
        return [_substitute(v, root) for v in value]
    return value


def load_config(budget: str, data_root: str = "../shared/data", data_config: str | list[str] | None = None) -> dict:
    """The budget config with ``{root}`` replaced by ``data_root`` and data overlays applied in order.

    An overlay (``paper_datasets/*.json``) has ``data`` (roles to replace; ``null`` removes a role's
    validation set) and optionally ``counts``; keys starting with ``_`` are comments.
    """
    path = config_path(budget)
    cfg = json.loads(path.read_text())
    try:  # the page shows a path anyone can follow from the repository root
        cfg["config_file"] = str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        cfg["config_file"] = str(path)
    overlays = [data_config] if isinstance(data_config, str) else list(data_config or [])
    for f in overlays:
        try:
            over = json.loads(Path(f).read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"data overlay {f}: {e}") from None
        unknown = [k for k in over.get("data", {}) if not k.startswith("_") and k not in cfg["data"]]
        if unknown:
            raise InputError(f"{f}: unknown data roles {unknown}; known: {sorted(cfg['data'])}")
        cfg["data"].update({k: v for k, v in over.get("data", {}).items() if not k.startswith("_")})
        cfg["counts"].update(over.get("counts", {}))
    if overlays:
        cfg["data_config"] = ", ".join(overlays)
    cfg = copy.deepcopy(cfg)
    cfg["data"] = {k: _substitute(v, data_root) for k, v in cfg["data"].items()}
    cfg["data_root"] = data_root
    return cfg
