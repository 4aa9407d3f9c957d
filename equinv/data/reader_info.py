"""What a dataset reader is: a function plus the help text and options ``equinv data kinds`` shows.

Each reader module declares its reader as data (``READER = ReaderInfo(...)``); the one table of kinds
is :data:`equinv.data.readers.READERS`. This module imports no reader, so readers and the synthetic
set can import it without a cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from equinv.data.sample import LandmarkIndex
from equinv.errors import SkipLog

#: ``reader(path, options, log) -> LandmarkIndex``; must pop every option it understands.
Reader = Callable[[Path, dict, SkipLog], LandmarkIndex]


@dataclass(frozen=True)
class ReaderInfo:
    """One dataset KIND.

    Attributes:
        kind: the KIND of ``KIND:PATH`` specs (lower case).
        fn: the reader.
        help: one line for ``equinv data kinds``.
        options: ``?key=value`` option -> its help line, in the order they are listed.
        path_must_exist: check that PATH exists before calling ``fn`` (False for ``synthetic:N``).
    """

    kind: str
    fn: Reader
    help: str
    options: dict[str, str] = field(default_factory=dict)
    path_must_exist: bool = True
