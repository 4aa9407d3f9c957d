"""Several evaluation runs side by side: ``OUT/compare.md`` and ``OUT/compare.html``.

One row per run; columns: the model (backbone, arch, descriptor / feature source from the config), landmark
regression IOD error and PCK per test set and number of annotations, matching errors, segmentation IoU.
The best value of each metric column is in bold. When runs were evaluated at common numbers of annotations,
a combined limited-annotation curve (one line per run) is drawn per test set.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from equinv.errors import InputError
from equinv.report.page import (
    Heading,
    Image,
    Link,
    Page,
    RunRecords,
    Table,
    Text,
    fmt_pm,
    load_run,
    model_summary,
    n_key,
    reference_series,
    regression_runs,
    short_path,
    short_spec,
)


@dataclass
class Column:
    """One metric column: a value and its text per run; ``better`` is ``"low"``, ``"high"`` or ``None``."""

    header: str
    values: list[float | None] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    better: str | None = None

    def best(self) -> set[int]:
        vals = [(v, i) for i, v in enumerate(self.values) if v is not None and v == v]
        if self.better is None or len({v for v, _ in vals}) < 2:  # a lone value or a tie says nothing
            return set()
        target = min(vals)[0] if self.better == "low" else max(vals)[0]
        return {i for v, i in vals if v == target}


def run_names(run_dirs: Sequence[str | Path], names: Sequence[str] | None = None) -> list[str]:
    """Row names: ``names`` as given, else the directory names (the paths where those collide)."""
    if names is not None:
        if len(names) != len(run_dirs):
            raise InputError(f"--names gives {len(names)} name(s) for {len(run_dirs)} run dir(s)")
        return [str(n) for n in names]
    base = [Path(d).resolve().name for d in run_dirs]
    if len(set(base)) == len(base):
        return base
    return [str(d) for d in run_dirs]


def _entries(rec: dict | None, segment: bool = False) -> dict[tuple[str, str], tuple[dict, dict]]:
    """``{(test spec, n key): (n_train entry, test summary)}`` of a regression or segmentation record."""
    if rec is None:
        return {}
    runs = (rec.get("runs") or []) if segment else regression_runs(rec)
    out = {}
    for r in runs:
        for spec, t in (r.get("tests") or {}).items():
            out[(spec, n_key(r))] = (r, t or {})
    return out


def _ordered(keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Union of (spec, n) keys: specs in order of appearance, then n ascending with ``all`` last."""
    specs = list(dict.fromkeys(k[0] for k in keys))

    def n_order(n: str) -> tuple[int, int]:
        return (1, 0) if n == "all" else (0, int(n) if n.lstrip("-").isdigit() else 0)

    return [(s, n) for s in specs for n in sorted({k[1] for k in keys if k[0] == s}, key=n_order)]


def _metric_columns(runs: list[RunRecords]) -> tuple[list[Column], list[str]]:
    reg = [_entries(r.regression) for r in runs]
    seg = [_entries(r.segment, segment=True) for r in runs]
    all_specs = list(dict.fromkeys(k[0] for e in reg + seg for k in e))
    one_spec = len(all_specs) <= 1

    def label(metric: str, spec: str, n: str) -> str:
        return f"{metric} N={n}" if one_spec else f"{metric} {short_spec(spec, 32)} N={n}"

    cols: list[Column] = []
    for spec, n in _ordered([k for e in reg for k in e]):
        got = [e.get((spec, n)) for e in reg]
        for key, name, better in (("iod_error_percent", "IOD %", "low"), ("pck", "PCK %", "high")):
            if not any(g and g[1].get(key) is not None for g in got):
                continue
            c = Column(label(name, spec, n), better=better)
            for g in got:
                v = g[1].get(key) if g else None
                c.values.append(v)
                c.texts.append(fmt_pm(v, g[1].get(f"{key}_std"), g[0].get("repeats")) if g else "–")
            cols.append(c)
    matches = [r.match for r in runs]
    if any(m is not None for m in matches):
        for key, name in (("match_error_same", "match same"), ("match_error_diff", "match diff")):
            c = Column(name, better="low")
            for m in matches:
                v = m.get(key) if m else None
                c.values.append(v)
                c.texts.append(fmt_pm(v, None))
            cols.append(c)
    for spec, n in _ordered([k for e in seg for k in e]):
        c = Column(label("IoU", spec, n), better="high")
        for e in seg:
            g = e.get((spec, n))
            v = g[1].get("iou") if g else None
            c.values.append(v)
            c.texts.append(fmt_pm(v, g[1].get("iou_std"), g[0].get("repeats"), 3) if g else "–")
        cols.append(c)
    return cols, all_specs


def _page_link(run: RunRecords, name: str, out: Path) -> str | Link:
    page = run.dir / "report.html"
    if not page.is_file():
        return name
    rel = os.path.relpath(page, out)
    return Link(name, rel, os.path.relpath(run.dir / "report.md", out))


def _curves(page: Page, figs: list[Path], runs: list[RunRecords], names: list[str], out: Path) -> None:
    """Combined limited-annotation curves, one per test set (and metric), one line per run."""
    from equinv.report.figures import Series, annotation_curve

    plots = []  # (metric, test spec, one Series per run that has it)
    # regression curves show the IOD error where the test set has eye indices, else PCK
    for kind, key, alt in (("regression", "iod_error_percent", "pck"), ("segment", "iou", None)):
        entries = [_entries(getattr(r, kind), segment=kind == "segment") for r in runs]
        for spec in dict.fromkeys(k[0] for e in entries for k in e):
            metric = key
            if alt and not any(t.get(key) is not None for e in entries for (s, _), (_, t) in e.items() if s == spec):
                metric = alt
            series = []
            for name, e in zip(names, entries, strict=True):
                pts = sorted((float(r["n_train"]), t.get(metric), t.get(f"{metric}_std"))
                             for (s, _), (r, t) in e.items()
                             if s == spec and t.get(metric) is not None and r.get("n_train") is not None)
                if pts:
                    series.append(Series(name, [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts]))
            if kind == "regression" and series:
                # the no-feature reference of the first run that records it (same seeds, same training rows)
                for r in runs:
                    if r.regression is None:
                        continue
                    ref = reference_series(regression_runs(r.regression), spec, f"mean_shape_{metric}")
                    if ref is not None:
                        series.append(ref)
                        break
            plots.append((metric, spec, series))
    n_fig = 0
    for metric, spec, series in plots:
        xs = [set(s.x) for s in series]
        # a curve needs several sizes, and the runs must meet at some size to be comparable
        shared = len(series) == 1 or any(a & b for i, a in enumerate(xs) for b in xs[i + 1:])
        if not any(len(s.x) >= 2 for s in series) or not shared:
            continue
        ylabel = {"iod_error_percent": "IOD error %", "pck": "PCK %", "iou": "mean IoU"}[metric]
        title = f"{ylabel} vs annotations: {short_spec(spec)}"
        name = f"compare_curve_{n_fig}.png"
        figs.append(annotation_curve(out / name, series, ylabel, title))
        page.add(Image(name, f"{title}; one line per run, error bars: std over repeats"))
        n_fig += 1


def build_compare_page(runs: list[RunRecords], names: list[str], out: Path) -> tuple[Page, list[Path]]:
    """The side-by-side page of ``runs`` and its figures (written into ``out``)."""
    page = Page(f"Evaluation comparison: {len(runs)} run(s)")
    cols, specs = _metric_columns(runs)
    header = ["run", "backbone", "arch", "descriptor"] + [c.header for c in cols]
    rows, bold = [], set()
    for i, (run, name) in enumerate(zip(runs, names, strict=True)):
        m = model_summary(run)
        rows.append([_page_link(run, name, out), short_path(m["backbone"] or "–"), m["arch"] or "–",
                     m["descriptor"] or "–"] + [c.texts[i] for c in cols])
    for j, c in enumerate(cols):
        bold |= {(i, 4 + j) for i in c.best()}
    page.add(Heading(2, "Results"))
    page.add(Table(header, rows, bold))
    note = ("IOD error % (lower is better), PCK % (higher), match errors in the 70-px frame (lower), mean IoU "
            "(higher); N = number of annotated training images; ± = std over repeats; best per column in bold.")
    page.add(Text(note))
    if specs:
        page.add(Text("Test sets: " + "; ".join(s if short_spec(s) == s else f"{short_spec(s)} = {s}"
                                                for s in specs) + "."))
    figs: list[Path] = []
    page.add(Heading(2, "Limited annotations"))
    before = len(figs)
    _curves(page, figs, runs, names, out)
    if len(figs) == before:
        page.add(Text("No curve: the runs have no common numbers of annotations with several sizes."))
    page.add(Heading(2, "Runs"))
    page.add(Table(["run", "directory", "records"],
                   [[n, str(r.dir), ", ".join(k for k, _ in r.records())] for n, r in zip(names, runs, strict=True)]))
    return page, figs


def compare_runs(run_dirs: Sequence[str | Path], out: str | Path, names: Sequence[str] | None = None) -> list[Path]:
    """Write ``out/compare.md``, ``out/compare.html`` and ``out/compare_curve_*.png``; returns the paths.

    Every directory is read first, so a bad one (:class:`InputError` naming it) stops before anything is written.
    """
    if not run_dirs:
        raise InputError("give at least one run directory")
    labels = run_names(run_dirs, names)
    runs = [load_run(d) for d in run_dirs]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    page, figs = build_compare_page(runs, labels, out)
    return page.write(out, "compare") + figs
