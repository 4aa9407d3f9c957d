"""Subcommands beyond the core ones in :mod:`equinv.cli`; each module has ``register(subparsers)``."""
