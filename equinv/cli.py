"""Command line: ``equinv <command> ...``. Thin: parse arguments, then call the library.

Every command lives in its own module of :mod:`equinv.commands`, named after it, with a ``register(sub)``
function that adds its parser; :data:`COMMANDS` lists them in help order. Errors in the user's input are
printed on one line (``equinv: error: FILE:LINE: ...``) with exit status 2; no traceback. So is an ``OSError``
of a file that could not be written (:func:`equinv.outputs.os_error_message`).
"""

from __future__ import annotations

import argparse
import sys

from equinv.commands import (
    data,
    demo,
    eval,
    features,
    fit,
    match,
    parts,
    predict,
    pretrain,
    pretrain_dve,
    project,
    report,
    view,
)
from equinv.errors import InputError
from equinv.version import __version__


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, ``equinv: error: <command>: argument --x: ...``, exit status 2."""

    def error(self, message: str):
        cmd = " ".join(self.prog.split()[1:])
        self.exit(2, f"equinv: error: {cmd + ': ' if cmd else ''}{message} (see {self.prog} --help)\n")


#: Every command, in help order.
COMMANDS = (demo, data, pretrain, pretrain_dve, project, features, match, parts, eval, fit, predict, view, report)


def build_parser() -> argparse.ArgumentParser:
    """The ``equinv`` parser with every command of :data:`COMMANDS`."""
    p = OneLineParser(
        prog="equinv",
        description="Learn object-landmark representations from unlabeled images (Cheng, Su & Maji, ICCV 2021).",
    )
    p.add_argument("--version", action="version", version=f"equinv {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; user errors become one line on stderr and exit status 2."""
    from equinv.runtime import tune_allocator

    tune_allocator()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error already printed on one line
        return e.code if isinstance(e.code, int) else 0
    try:
        return int(args.fn(args) or 0)
    except InputError as e:
        print(f"equinv: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a write that failed past the early checks (disk full, read-only, permission)
        from equinv.outputs import os_error_message

        msg = os_error_message(e)
        if msg is None:
            raise
        print(f"equinv: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("equinv: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
