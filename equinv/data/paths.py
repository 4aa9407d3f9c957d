"""Where equinv keeps generated files (decoded-image caches, the synthetic dataset)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$EQUINV_CACHE`` if set, else ``$XDG_CACHE_HOME/equinv``, else ``~/.cache/equinv``."""
    env = os.environ.get("EQUINV_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "equinv"
