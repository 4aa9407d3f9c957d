"""Write the results page (``docs/results.md``) from every step's outputs.

The page: what ran and at which budget, the claims checked against our numbers, one table per experiment
(our numbers beside the paper's, which are marked as the paper's and at its scale), figures copied from
the steps' report pages, free-text findings (``experiments/findings.md``, verbatim, when present), and
every step's exact command(s) with status and wall-clock.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from equinv.experiments import tables as T
from equinv.experiments.claims import FAILS, HOLDS, MISSING, all_claims
from equinv.experiments.collect import collect
from equinv.experiments.config import CONFIG_DIR
from equinv.experiments.plan import Step
from equinv.outputs import write_text

FINDINGS = CONFIG_DIR.parent / "findings.md"

#: (step name prefix, file glob, caption) of the figures shown on the page.
FIGURES = (
    ("faces_matchfig_", "matches.png", "Landmark matching: the reference face's landmarks transferred by nearest "
                                       "neighbour (Fig. 2)"),
    ("faces_regress_hc", "report_landmarks_0_*.png", "Predicted (orange) vs true (blue) landmarks, 5-point faces"),
    ("faces_parts_nmf", "parts.png", "NMF parts of the hypercolumn (Fig. 5)"),
    ("faces_parts_pca", "pca.png", "PCA of the hypercolumn: first three components as RGB"),
    ("faces_limited_compare", "compare_curve_*.png", "IOD error vs number of annotations (Fig. 4a)"),
    ("faces68_regress_hc", "report_landmarks_0_*.png", "Predicted vs true landmarks, 300-W"),
    ("birds_regress_hc", "report_landmarks_0_*.png", "Predicted vs true landmarks, CUB"),
)


def copy_figures(steps: list[Step], fig_dir: Path, rel: str) -> list[str]:
    """Copy the figures of finished steps into ``fig_dir``; Markdown image lines (paths relative to the page)."""
    lines: list[str] = []
    for prefix, pattern, caption in FIGURES:
        for s in steps:
            if not s.name.startswith(prefix):
                continue
            for png in sorted(Path(s.out).glob(pattern))[:2]:
                fig_dir.mkdir(parents=True, exist_ok=True)
                name = f"{s.name}__{png.name}"
                shutil.copyfile(png, fig_dir / name)
                lines += [f"**{caption}** (`{s.name}`, {png.name})", "", f"![{caption}]({rel}/{name})", ""]
    return lines or ["No figures yet.", ""]


def commands(steps: list[Step], marks: dict[str, dict]) -> list[str]:
    """Every step's status, wall-clock and exact command(s), with an anchor the tables link to."""
    out = ["## Commands and wall-clock", "",
           "Run from the repository root. Resumed steps list every attempt. Estimates come from the budget's "
           "`rates` (see `experiments/README.md`).", ""]
    for s in steps:
        m = marks.get(s.name)
        status = m.get("status", "?") if m else "not run"
        wall = f"{(m.get('total_wall_s') or 0) / 60:.1f} min" if m and m.get("end") else "–"
        out += [f'<a id="cmd-{s.name}"></a>', f"**`{s.name}`** — {s.table}; {status}; wall-clock {wall} "
                f"(estimate {s.estimate_min:.0f} min)", "", "```"]
        attempts = (m or {}).get("attempts") or [{"command": s.command(), "exit_code": None}]
        for a in attempts:
            suffix = f"   # exit {a.get('exit_code')}, {a['wall_s'] / 60:.1f} min" if a.get("wall_s") is not None \
                else ""
            out.append(a["command"] + suffix)
        out += ["```", ""]
    return out


def header(cfg: dict, steps: list[Step], marks: dict[str, dict]) -> list[str]:
    """The results page's opening lines: budget, config, progress."""
    done = [s for s in steps if marks.get(s.name, {}).get("status") == "ok"]
    failed = [s.name for s in steps if marks.get(s.name, {}).get("status") == "failed"]
    wall = sum((marks[s.name].get("total_wall_s") or 0.0) for s in steps if s.name in marks) / 60.0
    est = sum(s.estimate_min for s in steps)
    out = [f"# Results: reproducing Cheng, Su & Maji (ICCV 2021) at `{cfg['budget']}` budget", "",
           cfg.get("summary", ""), "",
           f"- Reproduce: `python -m equinv.experiments reproduce --budget {cfg['budget']} --data-root "
           f"{cfg['data_root']} --out {cfg.get('run_root', 'runs/repro/' + cfg['budget'])}` (resumes where it "
           "stopped; `--dry-run` lists the commands).",
           f"- Config: `{cfg.get('config_file', '')}`" + (f", data overlay `{cfg['data_config']}`"
                                                          if cfg.get("data_config") else "") + ".",
           f"- Steps: {len(done)} of {len(steps)} done" + (f"; failed: {', '.join(failed)}" if failed else "") + ".",
           f"- Wall-clock so far: {wall:.1f} min ({wall / 60:.1f} h); the plan's estimate: {est:.0f} min "
           f"({est / 60:.1f} h).", "",
           "Numbers in columns marked **paper** are the paper's own, at its scale (800-epoch MoCo on ~160k CelebA "
           "images, ResNet50 unless stated, MAFL / AFLW / 300-W / CUB-35), transcribed with table and line of "
           "`paper.txt`; every other number comes from the JSON record of the step named in its row. No number "
           "was tuned on a test split.", "", "### Budget choices", ""]
    return out + [f"- {w}" for w in cfg.get("why", [])] + [""]


def claims_section(ctx: T.Context) -> list[str]:
    """The claims section: each claim, the paper's numbers, ours and the verdict."""
    cl = all_claims(ctx.nums, ctx.cfg)
    counts = {v: sum(1 for c in cl if c.verdict == v) for v in (HOLDS, FAILS, MISSING)}
    return ["## Claims", "",
            f"{counts[HOLDS]} hold, {counts[FAILS]} do not hold, {counts[MISSING]} not run yet, at this budget.", "",
            *[c.line() for c in cl], ""]


def write_results(cfg: dict, steps: list[Step], path: str | Path, findings: str | Path | None = FINDINGS) -> Path:
    """Write the results page to ``path`` (figures into ``<stem>_figures/`` beside it); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nums, marks = collect(steps)
    ctx = T.Context(steps, nums, marks, cfg)
    fig_rel = f"{path.stem}_figures"
    lines = header(cfg, steps, marks) + claims_section(ctx)
    for fn in (T.face_regression, T.layers, T.matching, T.limited, T.faces68, T.birds, T.training_runs):
        lines += fn(ctx)
    lines += ["## Figures", "", *copy_figures(steps, path.parent / fig_rel, fig_rel)]
    if findings and Path(findings).is_file():
        lines += ["## Findings", "", Path(findings).read_text().rstrip(), ""]
    lines += commands(steps, marks)
    write_text(path, "\n".join(lines).rstrip() + "\n")
    return path
