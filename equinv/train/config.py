"""Run configurations as data: dataclasses saved beside every run as ``config.json``."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Self

from equinv.errors import InputError


class JsonConfig:
    """Mixin for a dataclass config: atomic ``save`` to JSON and tolerant ``load`` (unknown keys ignored)."""

    #: What a run directory of this config is called in error messages.
    run_kind = "run"

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))  # type: ignore[call-overload]
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Self:
        if not path.is_file():
            raise InputError(f"no config.json: not a {cls.run_kind} directory", path.parent)
        raw = json.loads(path.read_text())
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in raw.items() if k in known})
