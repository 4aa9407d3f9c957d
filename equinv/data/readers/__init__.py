"""The table of dataset KINDs: every reader, listed explicitly.

Each reader module declares its reader as data (``READER = ReaderInfo(...)``, see
:mod:`equinv.data.reader_info`); a new format is a new module plus one entry in :data:`ALL_READERS`.
"""

from __future__ import annotations

from equinv.data import synthetic
from equinv.data.reader_info import ReaderInfo
from equinv.data.readers import celeba, coco, cub, folder, mtfl, w300

#: Every reader, alphabetical by KIND (``equinv data kinds`` lists them sorted by KIND).
ALL_READERS: tuple[ReaderInfo, ...] = (
    w300.READER,
    celeba.READER,
    coco.READER,
    cub.READER,
    mtfl.FACEPOINT_READER,
    folder.READER,
    mtfl.MTFL_READER,
    synthetic.READER,
)

#: KIND -> its reader.
READERS: dict[str, ReaderInfo] = {r.kind: r for r in ALL_READERS}
