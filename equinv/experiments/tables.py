"""Markdown tables of the results page: our numbers, and the paper's in separate, labelled columns.

Each function takes a :class:`Context` and returns Markdown lines (a heading, a sentence on what is
compared, the table). ``–`` marks a number that does not exist (yet).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from equinv.experiments import paper as P
from equinv.experiments.collect import Numbers
from equinv.experiments.plan import Step

DASH = "–"


@dataclass
class Context:
    """Everything a table needs: the plan, the collected numbers and markers, the budget config."""

    steps: list[Step]
    nums: Numbers
    marks: dict[str, dict]
    cfg: dict

    @property
    def arch(self) -> str:
        return self.cfg.get("arch", "resnet18")

    def dve_arch(self, exp: str = "faces") -> str:
        return self.cfg[exp]["dve"]["arch"]

    def prefixed(self, prefix: str) -> list[Step]:
        return [s for s in self.steps if s.name.startswith(prefix)]

    def get(self, key: str) -> float | None:
        return self.nums.get(key)


def fmt(v: float | None, digits: int = 2) -> str:
    """A number with ``digits`` decimals, or a dash for ``None``."""
    return DASH if v is None else f"{v:.{digits}f}"


def fmt_pm(m: float | None, s: float | None, digits: int = 2) -> str:
    """``mean ± std``, or the mean alone without a std."""
    if m is None:
        return DASH
    return f"{m:.{digits}f} ± {s:.{digits}f}" if s is not None else f"{m:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table's lines."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def _paper_cells(row: P.PaperRow | None, cols: tuple[str, ...]) -> list[str]:
    if row is None:
        return [DASH] * len(cols) + [DASH]
    return [fmt(row.values.get(c)) for c in cols] + [f"{row.label} ({row.cite()})"]


def _step_link(s: Step) -> str:
    return f"[`{s.name}`](#cmd-{s.name})"


def face_regression(ctx: Context) -> list[str]:
    """Tables 2, 4, 5, 10: every representation with the same regressor on 5-point faces."""
    rows = []
    for s in ctx.prefixed("faces_regress_"):
        method = s.meta.get("method")
        if method is None:
            continue
        key = P.regression_key(method, ctx.arch, ctx.dve_arch(), s.meta.get("dim"))
        prow = P.REGRESSION.get(key) if key else None
        rows.append([s.label, fmt(ctx.get(f"{s.name}.val")), fmt(ctx.get(f"{s.name}.test")),
                     fmt(ctx.get(f"{s.name}.epoch"), 0), _step_link(s), *_paper_cells(prow, ("MAFL", "AFLW_M"))])
    ref = _reference(ctx.prefixed("faces_regress_"),
                     lambda name: [fmt(ctx.get(f"{name}.val.mean_shape")), fmt(ctx.get(f"{name}.test.mean_shape"))])
    rows += [[REFERENCE_LABEL, *ref[0], DASH, ref[1], DASH, DASH, DASH]] if ref else []
    head = ["representation", "ours: val split IOD %", "ours: test IOD %", "epoch kept", "step",
            "paper: MAFL IOD %", "paper: AFLW_M IOD %", "paper row"]
    d = ctx.cfg["data"]
    return ["## 1. Landmark regression, 5-point faces (Tables 2, 4, 5, 10)", "",
            f"Regressor trained on `{d['face5_train']}`, epoch chosen on `{d['face5_val']}` (the \"val split\" "
            f"column is that split, evaluated with the kept epoch); test: `{d['face5_test']}`. "
            "The paper's columns are the paper's numbers at its scale (800-epoch MoCo, MAFL / AFLW_M), "
            "not a reproduction of them.", "", *table(head, rows), ""]


def layers(ctx: Context) -> list[str]:
    """Table 3: single layers vs hypercolumns (ours ResNet18 at CPU scale; the paper's ResNet50)."""
    steps = [s for s in ctx.prefixed("faces_regress_") if "layer" in s.meta or "layers" in s.meta
             or s.name == "faces_regress_hc"]
    singles = [s for s in steps if "layer" in s.meta]
    vals = {s.name: ctx.get(f"{s.name}.val") for s in singles if ctx.get(f"{s.name}.val") is not None}
    best = min(vals, key=vals.get) if vals else None
    rows = []
    for s in steps:
        col = f"layer{s.meta['layer']}" if "layer" in s.meta else f"hc_l{s.meta.get('layers', 4)}"
        prow = P.TABLE3.get(col)
        mark = " (best single layer on val)" if s.name == best else ""
        rows.append([s.label + mark, fmt(ctx.get(f"{s.name}.val")), fmt(ctx.get(f"{s.name}.test")), _step_link(s),
                     *_paper_cells(prow, ("MAFL", "AFLW_M"))])
    head = ["features", "ours: val split IOD %", "ours: test IOD %", "step", "paper: MAFL IOD %",
            "paper: AFLW_M IOD %", "paper row"]
    return ["## 2. Single layers vs hypercolumn (Table 3)", "",
            "Single layers are regressed at their native side (24² for #1-#2, 12², 6², 3²), as the reference does. "
            "The best single layer is chosen on the validation split, never on the test set. The paper's "
            "numbers are ResNet50's.", "", *table(head, rows), ""]


def matching(ctx: Context) -> list[str]:
    """Tables 1 and 9: same- and different-identity matching errors."""
    rows = []
    for s in ctx.prefixed("faces_match_"):
        key = P.matching_key(s.meta.get("method", ""), ctx.arch, ctx.dve_arch(), s.meta.get("dim"))
        prow = P.MATCHING.get(key) if key else None
        rows.append([s.label, fmt(ctx.get(f"{s.name}.same")), fmt(ctx.get(f"{s.name}.diff")), _step_link(s),
                     *_paper_cells(prow, ("same", "diff"))])
    head = ["descriptor", "ours: same identity", "ours: different identity", "step", "paper: same", "paper: diff",
            "paper row"]
    pairs = ctx.cfg["faces"]["match"]["pairs"]
    return ["## 3. Landmark matching (Tables 1, 9)", "",
            f"{pairs} same-identity (TPS-warped copies) + {pairs} different-identity pairs of "
            f"`{ctx.cfg['data']['match_test']}` (faces held out of pretraining); hard nearest neighbour by cosine "
            "on 96² descriptors; mean error in the 70-px DVE frame (lower is better). The paper's numbers are "
            "on MAFL test, at its scale.", "", *table(head, rows), ""]


REFERENCE_LABEL = "mean training shape (no features; reference)"


def _reference(steps: list[Step], cells) -> tuple[list[str], str] | None:
    """The no-feature reference's value cells (``cells(step name)``) and step link, from the first of
    ``steps`` whose record has most of it (every step of a table has the same training rows); ``None`` when none
    does (runs made before ``equinv eval regress`` recorded it)."""
    best = None
    for s in steps:  # the first of the most complete (a probe may cover only some sizes)
        row = cells(s.name)
        filled = sum(c != DASH for c in row)
        if filled and (best is None or filled > best[0]):
            best = (filled, row, s)
    return (best[1], f"from {_step_link(best[2])}") if best else None


def limited(ctx: Context) -> list[str]:
    """Table 12 / Fig. 4a: IOD error vs the number of labelled faces, mean ± std over seeded repeats."""
    c = ctx.cfg["faces"]["limited"]
    sizes = c["n_train"]
    every = [s for s in ctx.prefixed("faces_limited_") if "regression.json" in s.outputs]
    steps = [s for s in every if not s.meta.get("probe")]
    probes = [s for s in every if s.meta.get("probe")]

    def row(s: Step) -> list[str]:
        return [s.label, *[fmt_pm(ctx.get(f"{s.name}.test.n{n}"), ctx.get(f"{s.name}.test.n{n}.std")) for n in sizes],
                _step_link(s)]

    rows = [row(s) for s in steps]
    # every step draws the same seeded training rows per size, so a probe's reference is the table's too
    ref = _reference(steps + probes, lambda name: [fmt_pm(ctx.get(f"{name}.test.n{n}.mean_shape"),
                                                 ctx.get(f"{name}.test.n{n}.mean_shape.std")) for n in sizes])
    rows += [[REFERENCE_LABEL, *ref[0], ref[1]]] if ref else []
    paper_rows = [[r.label, *[fmt_pm(r.values.get(n), r.std.get(n)) for n in P.LIMITED_SIZES], r.cite()]
                  for r in P.LIMITED.values()]
    return ["## 4. Limited annotations (Table 12 / Fig. 4a)", "",
            f"IOD error % on `{ctx.cfg['data']['face5_test_limited']}` vs the number of labelled training faces, "
            f"mean ± std over {c['repeats']} seeded draws, {c['tps_copies']} TPS copies per image, "
            f"{c['epochs']} epoch(s) of ~1000 tiled rows, last epoch kept (no validation, as the paper).", "",
            *table(["representation", *[f"N={n}" for n in sizes], "step"], rows), "",
            *(["Probes: one change to a method's command, at some of the sizes (what they show: the findings "
               "below).", "", *table(["probe", *[f"N={n}" for n in sizes], "step"], [row(s) for s in probes]), ""]
              if probes else []),
            "The paper's Table 12 (AFLW_M, its scale; \"all\" = 10,122 faces):", "",
            *table(["paper row", *[f"N={n}" for n in P.LIMITED_SIZES], "source"], paper_rows), ""]


def faces68(ctx: Context) -> list[str]:
    """300-W, 68 landmarks: IOD (outer eye corners)."""
    rows = []
    for s in ctx.prefixed("faces68_regress_"):
        key = P.regression_key(s.meta.get("method", ""), ctx.arch, ctx.dve_arch())
        prow = P.REGRESSION.get(key) if key else None
        rows.append([s.label, fmt(ctx.get(f"{s.name}.val")), fmt(ctx.get(f"{s.name}.test")), _step_link(s),
                     *_paper_cells(prow, ("300W",))])
    ref = _reference(ctx.prefixed("faces68_regress_"),
                     lambda name: [fmt(ctx.get(f"{name}.val.mean_shape")), fmt(ctx.get(f"{name}.test.mean_shape"))])
    rows += [[REFERENCE_LABEL, *ref[0], ref[1], DASH, DASH]] if ref else []
    d = ctx.cfg["data"]
    return ["## 5. 68 landmarks, 300-W (Table 10, 300W column)", "",
            f"Train `{d['face68_train']}`, epoch chosen on `{d['face68_val']}`, test `{d['face68_test']}` (our own "
            "split of the 300-W images here; the paper tests on HELEN/LFPW test + iBUG).", "",
            *table(["representation", "ours: val IOD %", "ours: test IOD %", "step", "paper: 300W IOD %",
                    "paper row"], rows), ""]


def birds(ctx: Context) -> list[str]:
    """CUB: PCK@0.05, correct and the reference's (``--paper-pck``)."""
    key_of = {"hc": f"{'r50' if ctx.arch.startswith('resnet50') else 'r18'}_hc", "random": "random_r18",
              "dve": "dve_hourglass"}
    rows = []
    for s in ctx.prefixed("birds_regress_"):
        prow = P.CUB.get(key_of.get(s.meta.get("method", ""), ""))
        rows.append([s.label, fmt(ctx.get(f"{s.name}.test.pck")), fmt(ctx.get(f"{s.name}.test.paper_pck")),
                     _step_link(s), fmt(prow.values.get(1241)) if prow else DASH,
                     f"{prow.label} ({prow.cite()})" if prow else DASH])
    ref = _reference(ctx.prefixed("birds_regress_"), lambda name: [fmt(ctx.get(f"{name}.test.mean_shape.pck"))])
    rows += [[REFERENCE_LABEL, *ref[0], DASH, ref[1], DASH, DASH]] if ref else []
    d = ctx.cfg["data"]
    return ["## 6. Birds, CUB (Tables 2, 13)", "",
            f"MoCo and DVE on `{'`, `'.join(d['bird_pretrain'])}` (unlabeled); regressor on `{d['bird_train']}`, "
            f"test `{d['bird_test']}`. There is no third split of the CUB images here, so the number of epochs is "
            "fixed in the config and the last epoch is kept. PCK@0.05 of the longer side: \"correct\" counts "
            "visible points only; \"paper-compatible\" is the reference's metric (int-truncated distances on a "
            "48-px frame, per-batch averages; protocol.md 8.10). The paper's DVE and random rows differ in kind: "
            "Hourglass, and a network trained from scratch.", "",
            *table(["representation", "ours: PCK %", "ours: paper-compatible PCK %", "step",
                    "paper: PCK % (all annotations)", "paper row"], rows), ""]


def _last_log(out: str) -> dict | None:
    p = Path(out) / "log.jsonl"
    try:
        lines = [ln for ln in p.read_text().splitlines() if ln.strip()]
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def training_runs(ctx: Context) -> list[str]:
    """Representation-learning runs: epochs / steps actually done in their wall-clock."""
    rows = []
    for s in ctx.steps:
        if s.resume_argv is None:
            continue
        last = _last_log(s.out) or {}
        m = ctx.marks.get(s.name, {})
        attempts = len(m.get("attempts", []))
        rows.append([s.label, _step_link(s), str(last.get("epoch", DASH)), str(last.get("step", DASH)),
                     fmt(ctx.get(f"{s.name}.wall_min"), 1), f"{s.estimate_min:.0f}", str(attempts)])
    return ["## Representation learning runs", "",
            "Epoch and step of the last log line (a run stopped by its wall-clock budget ends mid-schedule).", "",
            *table(["run", "step", "last epoch", "last step", "wall-clock min", "estimate min", "attempts"], rows), ""]
