"""The subcommands of ``equinv``: one module per command, named after it, each with ``register(sub)``.

A command only parses its arguments and calls the library; :mod:`equinv.commands.options` holds the flags and
value types they share. :data:`equinv.cli.COMMANDS` lists them.
"""
