"""Backbones, projection heads and the MoCo model."""

from equinv.models.backbones import (
    ARCHS,
    TAP_NAMES,
    Encoder,
    LoadReport,
    WidthResNet,
    build_backbone,
    load_backbone,
    read_state_dict,
    save_backbone,
)
from equinv.models.heads import LinearHead, MLPHead, build_head
from equinv.models.moco import MoCo

__all__ = [
    "ARCHS",
    "TAP_NAMES",
    "Encoder",
    "LinearHead",
    "LoadReport",
    "MLPHead",
    "MoCo",
    "WidthResNet",
    "build_backbone",
    "build_head",
    "load_backbone",
    "read_state_dict",
    "save_backbone",
]
