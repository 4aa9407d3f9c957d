"""Losses as plain functions of tensors."""

from equinv.losses.infonce import info_nce

__all__ = ["info_nce"]
