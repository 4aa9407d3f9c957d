"""The explicit table of dataset kinds: every declared reader is in it once, and specs resolve through it."""

from __future__ import annotations

import importlib
import pkgutil

import equinv.data.readers as readers_pkg
from equinv.data import synthetic
from equinv.data.reader_info import ReaderInfo
from equinv.data.readers import ALL_READERS, READERS
from equinv.data.spec import describe_kinds, parse_spec


def _declared() -> list[ReaderInfo]:
    """Every module-level ReaderInfo in the reader modules and the synthetic set."""
    names = [m.name for m in pkgutil.iter_modules(readers_pkg.__path__)]
    mods = [importlib.import_module(f"{readers_pkg.__name__}.{n}") for n in names]
    found = {id(v): v for mod in [*mods, synthetic] for v in vars(mod).values() if isinstance(v, ReaderInfo)}
    return list(found.values())


def test_every_declared_reader_is_listed_once():
    declared = _declared()
    assert sorted(r.kind for r in declared) == sorted(r.kind for r in ALL_READERS)
    assert all(any(r is a for a in ALL_READERS) for r in declared)
    assert len(READERS) == len(ALL_READERS), "a KIND is listed twice"
    assert all(READERS[k].kind == k for k in READERS)


def test_kinds_listed_alphabetically_with_their_options():
    text = describe_kinds()
    heads = [ln.split()[0] for ln in text.splitlines() if ln.startswith("  ") and not ln.startswith("   ")]
    kinds = [h for h in heads if h in READERS]
    assert kinds == sorted(READERS) == [r.kind for r in ALL_READERS]
    assert "?ids=" in text and "?holdout=" in text


def test_spec_kind_comes_from_the_table():
    assert parse_spec("CUB:/x?split=all").kind == "cub"
    assert not READERS["synthetic"].path_must_exist and READERS["cub"].path_must_exist
