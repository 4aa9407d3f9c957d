"""User-facing errors: one line that names the file (and line) at fault.

Every problem caused by the user's input (a missing file, a malformed annotation row, a corrupt image,
an unknown dataset kind) is raised as :class:`InputError`. The CLI prints ``str(err)`` on one line and
exits with status 2, without a traceback. With ``--skip-bad`` readers record the error in a
:class:`SkipLog` instead and go on, so nothing is dropped silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


class InputError(Exception):
    """Bad user input, located at ``path`` (and ``line``, 1-based, when it is a text file)."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path if self.line is None else f"{self.path}:{self.line}"
            where += ": "
        return f"{where}{self.message}"


@dataclass
class Skip:
    """One input that was skipped under ``--skip-bad``."""

    path: str | None
    line: int | None
    reason: str

    def __str__(self) -> str:
        return str(InputError(self.reason, self.path, self.line))


@dataclass
class SkipLog:
    """Collects bad inputs. With ``skip_bad=False`` the first one is raised instead."""

    skip_bad: bool = False
    skips: list[Skip] = field(default_factory=list)

    def bad(self, err: InputError) -> None:
        """Raise ``err``, or record it when skipping is allowed."""
        if not self.skip_bad:
            raise err
        self.skips.append(Skip(err.path, err.line, err.message))

    def __len__(self) -> int:
        return len(self.skips)

    def summary(self) -> str:
        if not self.skips:
            return "no inputs skipped"
        return f"{len(self.skips)} bad input(s) skipped"

    def write(self, path: str | Path) -> None:
        """Write every skip as JSON lines: {"path", "line", "reason"}."""
        with open(path, "w", encoding="utf-8") as fh:
            for s in self.skips:
                fh.write(json.dumps({"path": s.path, "line": s.line, "reason": s.reason}) + "\n")
