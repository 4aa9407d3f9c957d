"""One report per evaluation run: ``RUN_DIR/report.md`` and ``RUN_DIR/report.html`` from its JSON records.

:func:`write_run_page` reads whatever the directory holds (``regression.json`` + ``predictions.npz`` from
``equinv eval regress``, ``match.json`` from ``equinv eval match``, ``segment.json`` +
``segment_predictions.npz`` from ``equinv eval segment``) and writes tables of the metrics (mean ± std over
repeats, per landmark), figures (``report_*.png`` next to the pages, referenced relatively) and the run's
config, datasets and software versions. The HTML is self-contained apart from those PNGs (inline CSS).

Image figures re-read the first test images through the same preprocessing as the evaluation (test row
``r`` = image ``r`` of the prepared ``LandmarkDataset``); when the data is gone or no longer matches the
saved ground truth the figure is skipped with a note, never an error.

Pages are built as a list of blocks (:class:`Page`) rendered to both Markdown and HTML, so the two always
say the same; :mod:`equinv.report.compare` builds its side-by-side page the same way.
"""

from __future__ import annotations

import html
import json
import math
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from equinv import coords as C
from equinv.errors import InputError
from equinv.outputs import write_text
from equinv.records import N_SHOW

#: Record files an evaluation directory may hold, by kind.
RECORD_FILES = {"regression": "regression.json", "match": "match.json", "segment": "segment.json"}

# ----------------------------------------------------------------------------- formatting
def fmt(v, digits: int = 2) -> str:
    """A number for a table: ``–`` for missing, ints as they are, floats with ``digits`` decimals."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return "nan"
    return f"{f:.{digits}f}"


def fmt_pm(mean, std, repeats: int | None = None, digits: int = 2) -> str:
    """``mean ± std``; the ± part only when there were several repeats (one draw has no spread)."""
    if mean is None:
        return "–"
    if std is None or (repeats is not None and repeats < 2):
        return fmt(mean, digits)
    return f"{fmt(mean, digits)} ± {fmt(std, digits)}"


def short_spec(spec: str, width: int = 48) -> str:
    """``celeba:../shared/data/celeba?split=mafl_test`` → ``celeba:celeba?split=mafl_test`` (for headers)."""
    kind, sep, rest = str(spec).partition(":")
    if not sep:
        return str(spec)[:width]
    path, q, query = rest.partition("?")
    name = Path(path).name or path
    out = f"{kind}:{name}{q}{query}"
    return out if len(out) <= width else out[: width - 1] + "…"


# ----------------------------------------------------------------------------- page blocks
@dataclass
class Link:
    """A table cell linking ``href`` (``md_href`` in the Markdown page, when given)."""

    text: str
    href: str
    md_href: str | None = None


@dataclass
class Heading:
    """A heading block of a page."""
    level: int
    text: str


@dataclass
class Text:
    """A paragraph (``note``: rendered as a note)."""
    text: str
    note: bool = False


@dataclass
class Table:
    """A table block: a header and rows of cells."""
    header: list[str]
    rows: list[list]
    #: (row, column) cells to emphasise (e.g. the best value of a column)
    bold: set[tuple[int, int]] = field(default_factory=set)

    def numeric(self) -> list[bool]:
        """Per column: every cell is a number (or –/nan), so it is right-aligned."""
        return [bool(self.rows) and all(not isinstance(row[i], Link) and _NUM.match(str(row[i]))
                                        for row in self.rows if i < len(row)) for i in range(len(self.header))]


@dataclass
class Image:
    """A figure block: a file next to the page and its caption."""
    src: str
    caption: str


@dataclass
class Details:
    """A collapsed block (HTML ``<details>``) holding preformatted text."""
    summary: str
    body: str


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; border-bottom: 1px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.25em; margin-top: 1.6em; } h3 { font-size: 1.05em; }
.scroll { overflow-x: auto; margin: .6em 0; }
table { border-collapse: collapse; font-size: .88em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; white-space: nowrap; }
th { background: #f3f3f3; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
.note { background: #fff6dd; border-left: 4px solid #e0b030; padding: .4em .8em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; }
details { margin: .4em 0; } summary { cursor: pointer; color: #335; }
pre { background: #f6f8fa; padding: .6em; overflow-x: auto; font-size: .8em; }
"""

_NUM = re.compile(r"^[-+]?(\d|nan$|–$)")


def _md_cell(c) -> str:
    text = f"[{c.text}]({c.md_href or c.href})" if isinstance(c, Link) else str(c)
    return text.replace("|", "\\|").replace("\n", " ")


def _html_cell(c) -> str:
    if isinstance(c, Link):
        return f'<a href="{html.escape(c.href, quote=True)}">{html.escape(c.text)}</a>'
    return html.escape(str(c))


@dataclass
class Page:
    """A report page as blocks, rendered to Markdown and to self-contained HTML."""

    title: str
    blocks: list = field(default_factory=list)

    def add(self, *blocks) -> None:
        self.blocks.extend(blocks)

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for b in self.blocks:
            if isinstance(b, Heading):
                out += [f"{'#' * b.level} {b.text}", ""]
            elif isinstance(b, Text):
                out += [f"> **Note:** {b.text}" if b.note else b.text, ""]
            elif isinstance(b, Table):
                num = b.numeric()
                out.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
                out.append("|" + "|".join("---:" if n else "---" for n in num) + "|")
                for r, row in enumerate(b.rows):
                    cells = [f"**{_md_cell(c)}**" if (r, i) in b.bold else _md_cell(c) for i, c in enumerate(row)]
                    out.append("| " + " | ".join(cells) + " |")
                out.append("")
            elif isinstance(b, Image):
                out += [f"![{b.caption}]({b.src})", "", f"*{b.caption}*", ""]
            elif isinstance(b, Details):
                out += [f"<details><summary>{html.escape(b.summary)}</summary>", "", "```", b.body, "```", "",
                        "</details>", ""]
        return "\n".join(out).rstrip() + "\n"

    def html(self) -> str:
        out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
               f"<title>{html.escape(self.title)}</title>", f"<style>{CSS}</style></head><body>",
               f"<h1>{html.escape(self.title)}</h1>"]
        for b in self.blocks:
            if isinstance(b, Heading):
                lv = min(6, b.level)
                out.append(f"<h{lv}>{html.escape(b.text)}</h{lv}>")
            elif isinstance(b, Text):
                cls = ' class="note"' if b.note else ""
                out.append(f"<p{cls}>{html.escape(b.text)}</p>")
            elif isinstance(b, Table):
                rows = ["<tr>" + "".join(f"<th>{_html_cell(h)}</th>" for h in b.header) + "</tr>"]
                num = b.numeric()
                for r, row in enumerate(b.rows):
                    cells = []
                    for i, c in enumerate(row):
                        cls = ' class="num"' if num[i] else ""
                        body = _html_cell(c)
                        cells.append(f"<td{cls}>{f'<b>{body}</b>' if (r, i) in b.bold else body}</td>")
                    rows.append("<tr>" + "".join(cells) + "</tr>")
                out.append('<div class="scroll"><table>' + "".join(rows) + "</table></div>")
            elif isinstance(b, Image):
                out.append(f'<figure><img src="{html.escape(b.src, quote=True)}" alt="{html.escape(b.caption)}">'
                           f"<figcaption>{html.escape(b.caption)}</figcaption></figure>")
            elif isinstance(b, Details):
                out.append(f"<details><summary>{html.escape(b.summary)}</summary>"
                           f"<pre>{html.escape(b.body)}</pre></details>")
        out.append("</body></html>")
        return "\n".join(out) + "\n"

    def write(self, out_dir: str | Path, stem: str) -> list[Path]:
        """Write ``stem.md`` and ``stem.html`` into ``out_dir``; returns both paths."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        md, ht = out_dir / f"{stem}.md", out_dir / f"{stem}.html"
        write_text(md, self.markdown())
        write_text(ht, self.html())
        return [md, ht]


# ----------------------------------------------------------------------------- records
@dataclass
class RunRecords:
    """The JSON records found in one evaluation directory (``None`` where absent)."""

    dir: Path
    regression: dict | None = None
    match: dict | None = None
    segment: dict | None = None

    def records(self) -> list[tuple[str, dict]]:
        return [(k, r) for k in RECORD_FILES if (r := getattr(self, k)) is not None]


def load_run(run_dir: str | Path) -> RunRecords:
    """Read the evaluation records of ``run_dir``; :class:`InputError` naming the dir when there are none."""
    d = Path(run_dir)
    if not d.is_dir():
        raise InputError("not a directory (expected an evaluation output directory)", d)
    run = RunRecords(d)
    for kind, name in RECORD_FILES.items():
        p = d / name
        if not p.is_file():
            continue
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(f"unreadable evaluation record ({e})", p) from None
        if not isinstance(rec, dict):
            raise InputError("evaluation record is not a JSON object", p)
        setattr(run, kind, rec)
    if not run.records():
        raise InputError(f"no evaluation records here (expected one of {', '.join(RECORD_FILES.values())})", d)
    return run


def regression_runs(rec: dict) -> list[dict]:
    """The per-``n_train`` entries of a regression record (older records: one entry from the top level)."""
    runs = rec.get("runs")
    if runs:
        return list(runs)
    specs = test_specs(rec, [])
    tests = {specs[0]: {k: rec.get(k) for k in ("iod_error_percent", "pck", "paper_pck", "per_landmark")}} \
        if specs else {}
    if tests:
        t = tests[specs[0]]
        t["iod_error_percent_std"] = rec.get("std") if t["iod_error_percent"] is not None else None
        t["pck_std"] = rec.get("std") if t["iod_error_percent"] is None else None
    return [{"n_train": rec.get("n_train"), "all_annotations": False, "repeats": rec.get("repeats", 1),
             "tests": tests}]


def test_specs(rec: dict, runs: list[dict]) -> list[str]:
    """Test specs in evaluation order (index ``j`` of the ``*_{j}`` arrays of the npz files)."""
    ds = rec.get("datasets")
    if isinstance(ds, dict) and ds.get("test"):
        t = ds["test"]
        return [t] if isinstance(t, str) else list(t)
    cfg_t = (rec.get("config") or {}).get("test")
    if cfg_t:
        return [cfg_t] if isinstance(cfg_t, str) else list(cfg_t)
    return list(runs[0].get("tests", {})) if runs else []


def n_label(run: dict) -> str:
    """``"10"``, or ``"all"`` for the all-annotations entry."""
    return "all" if run.get("all_annotations") else str(run.get("n_train"))


def n_key(run: dict) -> str:
    """Column key of an ``n_train`` entry, shared between runs (``"all"`` matches any run's full set)."""
    return n_label(run)


def model_summary(run: RunRecords) -> dict:
    """``backbone``, ``arch``, ``descriptor`` (the feature source's kind) of a run."""
    out = {"backbone": None, "arch": None, "descriptor": None}
    for _, rec in run.records():
        cfg = rec.get("config") or {}
        feats = cfg.get("features") or {}  # records of equinv ≥ 0.2 describe the source there
        out["backbone"] = out["backbone"] or feats.get("backbone") or cfg.get("backbone")
        out["arch"] = out["arch"] or cfg.get("dve_arch") or feats.get("arch") or cfg.get("arch")
        out["descriptor"] = out["descriptor"] or feats.get("source") or cfg.get("descriptor") or cfg.get("source")
    return out


def short_path(p) -> str:
    """The last two components of a path-like value (``runs/celeba_r18``), others unchanged."""
    s = str(p)
    if "/" not in s:
        return s
    parts = Path(s).parts
    return "/".join(parts[-2:])


# ----------------------------------------------------------------------------- test images
def saved_views(z: dict, j: int, n: int) -> tuple[np.ndarray | None, str | None]:
    """The first ``n`` test views ``(n, S, S, 3)`` uint8 of test set ``j`` that the evaluation saved, or
    ``(None, why not)``: pages draw what the evaluation kept, never re-read a dataset."""
    images = z.get(f"images_{j}")
    if images is None:
        return None, "the evaluation saved no test images (a record of equinv < 0.2)"
    if len(images) < n:
        return None, f"the evaluation saved {len(images)} test images for {n} predictions"
    return np.asarray(images[:n]), None


def _to_px(p: np.ndarray, size: int) -> np.ndarray:
    """Saved normalised ``[-1, 1]`` points (``align_corners=True``) → float64 pixels of the ``size`` final view."""
    return C.points_from_norm(np.asarray(p, np.float64), size, align_corners=True)


def _image_errors(pred: np.ndarray, gt: np.ndarray, vis: np.ndarray, eyes, size: int) -> list[str]:
    """Per-image caption: IOD error % with eye indices, else mean pixel error."""
    d = np.linalg.norm(_to_px(pred, size) - _to_px(gt, size), axis=-1)
    out = []
    for r in range(len(gt)):
        v = vis[r].astype(bool)
        if not v.any():
            out.append(f"#{r}")
            continue
        e = float(d[r][v].mean())
        if eyes is not None:
            iod = float(np.linalg.norm(_to_px(gt[r, eyes[0]], size) - _to_px(gt[r, eyes[1]], size)))
            out.append(f"#{r}  {100 * e / iod:.1f}% IOD" if iod > 0 else f"#{r}")
        else:
            out.append(f"#{r}  {e:.1f} px")
    return out


def _figure_entries(runs: list[dict]) -> list[int]:
    """Entries drawn as image figures: the most and the fewest annotations (one if they coincide)."""
    if not runs:
        return []
    order = sorted(range(len(runs)), key=lambda i: (runs[i].get("n_train") or 0, bool(runs[i].get("all_annotations"))))
    return sorted({order[-1], order[0]}, key=lambda i: -(runs[i].get("n_train") or 0))


def _open_npz(path: Path) -> tuple[dict | None, str | None]:
    if not path.is_file():
        return None, f"{path.name} not found: no image figures"
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}, None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        return None, f"{path.name} is unreadable ({e}): no image figures"


# ----------------------------------------------------------------------------- sections
def _curve(page: Page, figs: list[Path], d: Path, name: str, runs: list[dict], specs: list[str], key: str,
           ylabel: str, title: str) -> None:
    """Metric ``key`` vs n_train, one line per test spec, when there are several n_train entries."""
    from equinv.report.figures import Series, annotation_curve

    if len({r.get("n_train") for r in runs}) < 2:
        return
    series = []
    for spec in specs:
        xs, ys, es = [], [], []
        for r in runs:
            t = (r.get("tests") or {}).get(spec) or {}
            if t.get(key) is None or r.get("n_train") is None:
                continue
            xs.append(float(r["n_train"]))
            ys.append(float(t[key]))
            es.append(t.get(f"{key}_std"))
        if len(xs) >= 2:
            series.append(Series(short_spec(spec), xs, ys, es))
    if not series:
        return
    ref = reference_series(runs, specs[0], f"mean_shape_{key}")
    if ref is not None:
        series.append(ref)
    figs.append(annotation_curve(d / name, series, ylabel, title))
    page.add(Image(name, f"{title} (error bars: std over repeats)"))


def reference_series(runs: list[dict], spec: str, key: str):
    """The dashed no-feature reference (mean of the same training shapes) of ``spec``, if recorded."""
    from equinv.report.figures import Series

    pts = sorted((float(r["n_train"]), float(t[key])) for r in runs
                 if r.get("n_train") is not None and (t := (r.get("tests") or {}).get(spec) or {}).get(key) is not None)
    if len(pts) < 2:
        return None
    return Series("mean training shape (no features)", [p[0] for p in pts], [p[1] for p in pts], reference=True)


def _regression_summary(page: Page, rec: dict, cfg: dict) -> None:
    """The heading and one line: training data, validation data, epochs, selection."""
    page.add(Heading(2, "Landmark regression"))
    ds = rec.get("datasets") or {}
    train = ds.get("train") if isinstance(ds, dict) else cfg.get("train")
    bits = [f"train {train}" + (f" ({ds['n_train_images']} images)" if isinstance(ds, dict)
                                 and ds.get("n_train_images") else "")]
    if isinstance(ds, dict) and ds.get("val"):
        bits.append(f"val {ds['val']}")
    if cfg.get("epochs") is not None:
        bits.append(f"{cfg['epochs']} epochs")
    if rec.get("selection"):
        bits.append(f"kept: {rec['selection']}")
    page.add(Text("; ".join(bits) + "."))


def _regression_table(page: Page, runs: list[dict], specs: list[str], cfg: dict, size: int) -> bool:
    """The metrics table (one row per n_train entry and test set) and its caption; returns whether IOD is shown."""
    tests = [t or {} for r in runs for t in r.get("tests", {}).values()]
    has_iod = any(t.get("iod_error_percent") is not None for t in tests)
    has_paper = any(t.get("paper_pck") is not None for t in tests)
    has_ref = any(t.get("mean_shape_pck") is not None for t in tests)
    ref_key = "mean_shape_iod_error_percent" if has_iod else "mean_shape_pck"
    header = ["annotations", "repeats", "test set"] + (["IOD error %"] if has_iod else []) + ["PCK %"] \
        + (["paper PCK %"] if has_paper else []) \
        + ([f"mean shape {'IOD error' if has_iod else 'PCK'} %"] if has_ref else []) + ["images", "lr", "wd"]
    rows = []
    for r in runs:
        reps = r.get("repeats")
        for spec in specs:
            t = (r.get("tests") or {}).get(spec)
            if t is None:
                continue
            row = [_annotations(r), fmt(reps), short_spec(spec)]
            if has_iod:
                row.append(fmt_pm(t.get("iod_error_percent"), t.get("iod_error_percent_std"), reps))
            row.append(fmt_pm(t.get("pck"), t.get("pck_std"), reps))
            if has_paper:
                row.append(fmt_pm(t.get("paper_pck"), t.get("paper_pck_std"), reps))
            if has_ref:
                row.append(fmt_pm(t.get(ref_key), t.get(f"{ref_key}_std"), reps))
            row += [fmt(t.get("n_images")), _fmt_g(r.get("lr")), _fmt_g(r.get("wd"))]
            rows.append(row)
    page.add(Table(header, rows))
    alpha = cfg.get("pck_alpha", 0.05)
    page.add(Text(f"IOD error: mean landmark error in % of the inter-ocular distance (lower is better); PCK: % of "
                  f"visible landmarks within {alpha:g}·{size} px of the truth in the {size}-px view (higher is "
                  "better); ± is the std over repeated draws of the training subset."
                  + (" Mean shape: a reference with no features, the mean of the same training images' "
                     "landmarks predicted for every test image; a representation that does not beat it has "
                     "not yet learned to place landmarks." if has_ref else "")))
    return has_iod


def _per_landmark_tables(page: Page, runs: list[dict], specs: list[str], names: list[str]) -> None:
    """One table per test set, a column per n_train entry (and metric)."""
    k = max([len(names)] + [len((t or {}).get("pck_per_landmark") or (t or {}).get("per_landmark") or [])
                            for r in runs for t in r.get("tests", {}).values()])
    if not k:
        return
    names = names + [f"p{i}" for i in range(len(names), k)]
    for spec in specs:
        header, cols = ["#", "landmark"], []
        for r in runs:
            t = (r.get("tests") or {}).get(spec) or {}
            if t.get("iod_error_percent") is not None and t.get("per_landmark"):
                header.append(f"IOD % N={n_label(r)}")
                cols.append(t["per_landmark"])
            pl = t.get("pck_per_landmark") or (t.get("per_landmark") if t.get("iod_error_percent") is None
                                               else None)
            if pl:
                header.append(f"PCK % N={n_label(r)}")
                cols.append(pl)
        if not cols:
            continue
        page.add(Heading(3, f"Per landmark: {short_spec(spec)}"))
        rows = [[str(i), names[i]] + [fmt(c[i]) if i < len(c) else "–" for c in cols] for i in range(k)]
        page.add(Table(header, rows))


def _prediction_figures(page: Page, rec: dict, d: Path, figs: list[Path], runs: list[dict], specs: list[str],
                        size: int) -> None:
    """Predicted vs true landmarks on the first test images the evaluation saved."""
    from equinv.report.figures import landmark_grid

    page.add(Heading(3, "Predictions on test images"))
    z, why = _open_npz(d / (rec.get("predictions_file") or "predictions.npz"))
    if z is None:
        page.add(Text(why, note=True))
        return
    eyes = rec.get("eyes")
    for j, spec in enumerate(specs):
        if f"gt_{j}" not in z:
            page.add(Text(f"no saved ground truth for {spec}", note=True))
            continue
        gt, vis = z[f"gt_{j}"][:N_SHOW], z[f"visible_{j}"][:N_SHOW].astype(bool)
        entries = [i for i in _figure_entries(runs) if f"pred_{i}_{j}" in z]
        if not entries:
            continue
        images, why = saved_views(z, j, len(gt))
        if images is None:
            page.add(Text(f"{why}; image figures skipped", note=True))
            continue
        for i in entries:
            pred = z[f"pred_{i}_{j}"][:N_SHOW]
            name = f"report_landmarks_{j}_{i}.png"
            title = f"{short_spec(spec)}, N={n_label(runs[i])} (repeat 0)"
            figs.append(landmark_grid(d / name, _to_px(gt, size), vis, _to_px(pred, size), images,
                                      _image_errors(pred, gt, vis, eyes, size), title, size))
            page.add(Image(name, f"{title}: true (blue circles) vs predicted (orange crosses) landmarks, "
                                 f"first {len(gt)} test images"))


def _regression_section(page: Page, rec: dict, d: Path, figs: list[Path]) -> None:
    cfg = rec.get("config") or {}
    runs = regression_runs(rec)
    specs = test_specs(rec, runs)
    size = int(cfg.get("image_size") or 96)
    _regression_summary(page, rec, cfg)
    if _regression_table(page, runs, specs, cfg, size):
        _curve(page, figs, d, "report_curve_iod.png", runs, specs, "iod_error_percent", "IOD error %",
               "IOD error vs annotations")
    _curve(page, figs, d, "report_curve_pck.png", runs, specs, "pck", "PCK %", "PCK vs annotations")
    _per_landmark_tables(page, runs, specs, list(rec.get("landmark_names") or []))
    _prediction_figures(page, rec, d, figs, runs, specs, size)


def _annotations(run: dict) -> str:
    """``"10"``, or ``"all (1000)"``."""
    return n_label(run) + (f" ({run.get('n_train')})" if run.get("all_annotations") else "")


def _fmt_g(v) -> str:
    return "–" if v is None else f"{float(v):g}"


def _match_section(page: Page, rec: dict) -> None:
    cfg = rec.get("config") or {}
    page.add(Heading(2, "Landmark matching"))
    bits = [f"data {cfg.get('data') or _datasets_text(rec.get('datasets'))}"]
    for key in ("descriptor", "backbone", "arch", "layer", "pairs"):
        if cfg.get(key) is not None:
            bits.append(f"{key} {cfg[key]}")
    page.add(Text("; ".join(bits) + "."))
    rows = [["same identity", fmt(rec.get("match_error_same")), fmt(rec.get("match_error_same_px")),
             fmt(rec.get("n_same"))],
            ["different identity", fmt(rec.get("match_error_diff")), fmt(rec.get("match_error_diff_px")),
             fmt(rec.get("n_diff"))]]
    page.add(Table(["pair", "error (70-px frame)", "error (input px)", "landmarks counted"], rows))
    extra = f"{fmt(rec.get('n_pairs'))} image pairs"
    if rec.get("seconds") is not None:
        extra += f", {fmt(rec['seconds'], 1)} s"
    page.add(Text(f"Mean distance between matched and true landmark positions (lower is better); {extra}."))


def _segment_section(page: Page, rec: dict, d: Path, figs: list[Path]) -> None:
    runs = rec.get("runs") or [{"n_train": rec.get("n_train"), "repeats": rec.get("repeats", 1),
                                "tests": {s: {"iou": rec.get("iou"), "iou_std": rec.get("std")}
                                          for s in test_specs(rec, [])[:1]}}]
    specs = test_specs(rec, runs)
    page.add(Heading(2, "Figure-ground segmentation"))
    ds = rec.get("datasets")
    page.add(Text(f"datasets: {_datasets_text(ds)}."))
    rows = []
    for r in runs:
        for spec in specs:
            t = (r.get("tests") or {}).get(spec)
            if t is not None:
                rows.append([_annotations(r), fmt(r.get("repeats")), short_spec(spec),
                             fmt_pm(t.get("iou"), t.get("iou_std"), r.get("repeats"), 3), fmt(t.get("n_images"))])
    page.add(Table(["annotations", "repeats", "test set", "mean IoU", "images"], rows))
    page.add(Text("Mean intersection-over-union of the foreground masks (higher is better); ± is the std over "
                  "repeated draws of the training subset."))
    _curve(page, figs, d, "report_curve_iou.png", runs, specs, "iou", "mean IoU", "IoU vs annotations")

    page.add(Heading(3, "Predicted masks on test images"))
    z, why = _open_npz(d / (rec.get("predictions_file") or "segment_predictions.npz"))
    if z is None:
        page.add(Text(why, note=True))
        return
    from equinv.report.figures import mask_grid

    for j, spec in enumerate(specs):
        if f"mask_gt_{j}" not in z:
            continue
        gt = z[f"mask_gt_{j}"][:N_SHOW]
        entries = [i for i in _figure_entries(runs) if f"mask_pred_{i}_{j}" in z]
        if not entries:
            continue
        images, why = saved_views(z, j, len(gt))
        if images is not None and images.shape[1:3] != gt.shape[1:3]:
            images, why = None, f"the images of {spec} are not {gt.shape[1]} px as the saved masks"
        if images is None:
            # the masks alone still show the predictions: draw them on grey
            page.add(Text(f"{why}; masks drawn on grey", note=True))
        for i in entries:
            pred = z[f"mask_pred_{i}_{j}"][:N_SHOW]
            inter = np.logical_and(pred > 0, gt > 0).sum((1, 2))
            union = np.logical_or(pred > 0, gt > 0).sum((1, 2))
            labels = [f"#{r}  IoU {inter[r] / union[r]:.2f}" if union[r] else f"#{r}" for r in range(len(gt))]
            name = f"report_masks_{j}_{i}.png"
            title = f"{short_spec(spec)}, N={n_label(runs[i])} (repeat 0)"
            figs.append(mask_grid(d / name, gt, pred, images, labels, title))
            page.add(Image(name, f"{title}: green both, red predicted only, blue true only; first {len(gt)} "
                                 "test images"))


def _datasets_text(ds) -> str:
    if ds is None:
        return "–"
    if isinstance(ds, str):
        return ds
    if isinstance(ds, list):
        return ", ".join(map(str, ds))
    if isinstance(ds, dict):
        return "; ".join(f"{k} {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in ds.items()
                         if v not in (None, [], ""))
    return str(ds)


def _provenance(page: Page, run: RunRecords) -> None:
    page.add(Heading(2, "Run details"))
    for kind, rec in run.records():
        vers = rec.get("versions") or {}
        line = ", ".join(f"{k} {v}" for k, v in vers.items() if k in ("equinv", "torch", "torchvision", "numpy",
                                                                        "python", "device"))
        bits = [f"{RECORD_FILES[kind]}:"]
        if rec.get("seed") is not None:
            bits.append(f"seed {rec['seed']};")
        if rec.get("created"):
            bits.append(f"created {rec['created']};")
        if line:
            bits.append(f"software {line}.")
        skipped = rec.get("skipped")
        if skipped:
            bits.append(f"{len(skipped)} input(s) skipped as bad.")
        page.add(Text(" ".join(bits)))
        page.add(Details(f"{kind}: config", json.dumps(rec.get("config"), indent=2, default=str)))
        page.add(Details(f"{kind}: datasets", json.dumps(rec.get("datasets"), indent=2, default=str)))
        if vers:
            page.add(Details(f"{kind}: software versions", json.dumps(vers, indent=2, default=str)))


def build_run_page(run: RunRecords) -> tuple[Page, list[Path]]:
    """The page of one run and the figures written for it (into ``run.dir``)."""
    d = run.dir
    page = Page(f"Evaluation report: {d.resolve().name}")
    m = model_summary(run)
    model = ", ".join(f"{k} {v}" for k, v in m.items() if v)
    recs = ", ".join(RECORD_FILES[k] for k, _ in run.records())
    page.add(Text(f"Directory {d}; records {recs}." + (f" Model: {model}." if model else "")))
    figs: list[Path] = []
    if run.regression is not None:
        _regression_section(page, run.regression, d, figs)
    if run.match is not None:
        _match_section(page, run.match)
    if run.segment is not None:
        _segment_section(page, run.segment, d, figs)
    _provenance(page, run)
    return page, figs


def write_run_page(run_dir: str | Path) -> list[Path]:
    """Write ``run_dir/report.md``, ``run_dir/report.html`` and their ``report_*.png`` figures.

    Returns the written paths (the two pages first). :class:`InputError` when ``run_dir`` holds no
    evaluation record.
    """
    run = load_run(run_dir)
    page, figs = build_run_page(run)
    return page.write(run.dir, "report") + figs
