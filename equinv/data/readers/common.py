"""Helpers shared by the readers: text files with file:line errors, ``?key=value`` option parsing."""

from __future__ import annotations

import re
from pathlib import Path

from equinv.errors import InputError

_BLANK = re.compile(r"^\s*$")


def read_text(path: Path, what: str) -> str:
    """The text of ``path``; a missing or unreadable file is an :class:`InputError` naming it.

    ``what`` describes the file for the message (e.g. ``"MTFL list file"``). UTF-8 is tried first,
    then Latin-1 (old annotation lists are sometimes written in a Windows code page).
    """
    path = Path(path)
    if not path.is_file():
        kind = "is a folder, not a file" if path.is_dir() else "not found"
        raise InputError(f"{what} {kind}", path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {what} ({e.strerror or e})", path) from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_lines(path: Path, what: str) -> list[tuple[int, str]]:
    """Non-blank lines of a text file as ``(1-based line number, stripped text)``; CRLF is fine."""
    text = read_text(path, what)
    return [(i, ln.strip()) for i, ln in enumerate(text.splitlines(), 1) if not _BLANK.match(ln)]


def pop_int(options: dict, key: str, default: int, allowed: tuple[int, ...] | None = None) -> int:
    """Pop integer option ``key``; a non-integer (or not ``allowed``) value is an :class:`InputError`."""
    raw = options.pop(key, None)
    if raw is None:
        return default
    try:
        v = int(raw.strip())
    except ValueError:
        raise InputError(f"option {key}={raw!r} is not an integer") from None
    if allowed is not None and v not in allowed:
        raise InputError(f"option {key}={raw!r} must be one of {', '.join(map(str, allowed))}")
    return v


def pop_choice(options: dict, key: str, default: str, choices: tuple[str, ...]) -> str:
    """Pop option ``key``, which must be one of ``choices`` (case-insensitive)."""
    raw = options.pop(key, None)
    if raw is None:
        return default
    v = raw.strip().lower()
    if v not in choices:
        raise InputError(f"option {key}={raw!r} must be one of {', '.join(choices)}")
    return v


def pop_ranges(options: dict, key: str) -> list[tuple[int, int]] | None:
    """Pop an inclusive integer range option like ``9001-10000`` or ``1-50,60,70-72``."""
    raw = options.pop(key, None)
    if raw is None:
        return None
    out = []
    for part in raw.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise InputError(f"option {key}={raw!r}: expected inclusive ranges like 1-50 or 1-50,60")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise InputError(f"option {key}={raw!r}: range {lo}-{hi} is empty")
        out.append((lo, hi))
    return out


def in_ranges(v: int, ranges: list[tuple[int, int]]) -> bool:
    """Whether ``v`` lies in any of the inclusive ``ranges`` (as :func:`pop_ranges` returns them)."""
    return any(lo <= v <= hi for lo, hi in ranges)


def pop_path(options: dict, key: str, base: Path) -> Path | None:
    """Pop a path option; relative paths are taken relative to ``base`` (the dataset folder)."""
    raw = options.pop(key, None)
    if raw is None:
        return None
    p = Path(raw).expanduser()
    return p if p.is_absolute() else base / p


def norm_rel(path: str) -> str:
    """Normalised relative path for matching entries across lists: ``/`` separators, no ``./``, lower case."""
    p = path.strip().replace("\\", "/")
    while p.startswith("./"):
        p = p[2:]
    return re.sub(r"/+", "/", p).lower()

