"""Run configurations as data: dataclasses saved beside every run as ``config.json``, and resume rules."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Self

from equinv.errors import InputError
from equinv.safefile import tmp_path


def flag(name: str) -> str:
    """The command-line flag of a config field (``batch_size`` → ``--batch-size``)."""
    return "--" + name.replace("_", "-")


def _shown(value: Any) -> str:
    """A run's setting as a resume refusal names it (``None`` is the option's derived default)."""
    return "default" if value is None else str(value)


class JsonConfig:
    """Mixin for a dataclass config: atomic ``save`` to JSON, tolerant ``load``, and :meth:`resume`.

    Subclasses name the fields a resumed run may change (``resumable``); every other field defines the
    run. Fields in ``per_invocation`` (the wall-clock budget) belong to one invocation: a resume starts
    them from their default unless given again.
    """

    #: What a run directory of this config is called in error messages.
    run_kind = "run"
    #: Fields a resumed run may change.
    resumable: tuple[str, ...] = ()
    #: Fields reset to their default on resume unless given again.
    per_invocation: tuple[str, ...] = ()

    def save(self, path: Path) -> None:
        """Write ``path`` atomically (temporary file, rename)."""
        tmp = tmp_path(path)
        tmp.write_text(json.dumps(asdict(self), indent=2))  # type: ignore[call-overload]
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a saved config; unknown keys (from other versions) are ignored."""
        if not path.is_file():
            raise InputError(f"no config.json: not a {cls.run_kind} directory", path.parent)
        raw = json.loads(path.read_text())
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in raw.items() if k in known})

    @classmethod
    def resume(cls, run: str | Path, overrides: dict[str, Any]) -> Self:
        """The config of the run in ``run`` with the options the user gave again (``overrides``) applied.

        ``overrides`` holds only options given on the command line. Changing a ``resumable`` one is
        applied and reported on one line; changing any other is refused with one line naming the
        flags (giving the run's own value again is fine).
        """
        run = Path(run)
        cfg = cls.load(run / "config.json")
        defaults = cls()
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise InputError(f"{', '.join(map(flag, unknown))}: not an option of a {cls.run_kind}", run)
        changed = {k: (getattr(cfg, k), v) for k, v in overrides.items() if getattr(cfg, k) != v}
        fixed = [k for k in changed if k not in cls.resumable and k not in cls.per_invocation]
        if fixed:
            was = ", ".join(f"{flag(k)} {changed[k][1]} (run: {_shown(changed[k][0])})" for k in fixed)
            raise InputError(f"cannot change {was} when resuming; start a new run with another --out", run)
        for k in cls.per_invocation:
            setattr(cfg, k, getattr(defaults, k))
        for k, v in overrides.items():
            setattr(cfg, k, v)
        cfg.out = str(run)  # type: ignore[attr-defined]
        if changed and os.environ.get("RANK", "0") == "0":
            print("resuming with " + ", ".join(f"{flag(k)} {a} -> {b}" for k, (a, b) in changed.items()))
        return cfg
