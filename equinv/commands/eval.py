"""``equinv eval regress|match|segment``: the evaluation command group (one module per subcommand)."""

from __future__ import annotations

from equinv.commands import eval_match, eval_regress, eval_segment

#: The subcommands of ``equinv eval``, in help order.
SUBCOMMANDS = (eval_regress, eval_match, eval_segment)


def register(sub) -> None:
    """Add ``equinv eval`` and its subcommands."""
    p = sub.add_parser("eval", help="evaluate a representation (landmark regression, matching, segmentation)",
                       description="Evaluation of learnt representations, as the paper reports them.")
    group = p.add_subparsers(dest="eval_command", metavar="SUBCOMMAND", required=True)
    for module in SUBCOMMANDS:
        module.register(group)
