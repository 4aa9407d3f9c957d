"""equinv: equivariant and invariant learning of object landmark representations."""

__version__ = "0.1.0"
