"""``equinv data check``: load a whole dataset, count what is in it, draw a contact sheet."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from equinv.data.dataset import LandmarkDataset
from equinv.data.preprocess import Preprocess, center_view
from equinv.data.spec import read_index
from equinv.errors import SkipLog


@dataclass
class CheckReport:
    """Counts for one dataset spec."""

    spec: str
    images: int
    annotated: int
    landmarks: int
    visible_points: int
    names: tuple[str, ...]
    sizes: Counter
    skipped: list[str] = field(default_factory=list)
    sheet: Path | None = None

    def lines(self) -> list[str]:
        out = [
            f"dataset        {self.spec}",
            f"images         {self.images}",
            f"annotated      {self.annotated}",
            f"landmarks      {self.landmarks}" + (f" ({_names(self.names)})" if self.names else ""),
            f"visible points {self.visible_points}",
            f"image sizes    {describe_sizes(self.sizes)}",
            f"skipped        {len(self.skipped)}",
        ]
        out += [f"  skipped: {s}" for s in self.skipped[:20]]
        if len(self.skipped) > 20:
            out.append(f"  ... and {len(self.skipped) - 20} more (see the skip report)")
        if self.sheet is not None:
            out.append(f"contact sheet  {self.sheet}")
        return out


def _names(names: tuple[str, ...], most: int = 20) -> str:
    if len(names) <= most:
        return ", ".join(names)
    return ", ".join(names[:8]) + f", ... , {names[-1]}"


def describe_sizes(sizes: Counter) -> str:
    """``89x109 (9000)`` for few distinct sizes, else ranges of width and height."""
    if not sizes:
        return "-"
    if len(sizes) <= 4:
        return ", ".join(f"{w}x{h} ({c})" for (w, h), c in sizes.most_common())
    ws = np.array([w for (w, _), c in sizes.items() for _ in range(c)])
    hs = np.array([h for (_, h), c in sizes.items() for _ in range(c)])
    return (
        f"{len(sizes)} distinct; width {ws.min()}–{ws.max()} (median {int(np.median(ws))}), "
        f"height {hs.min()}–{hs.max()} (median {int(np.median(hs))})"
    )


def check_dataset(
    spec: str,
    sheet: Path | None = None,
    pre: Preprocess | None = None,
    skip_bad: bool = False,
    n_sheet: int = 32,
    workers: int = 2,
    progress: bool = True,
    seed: int = 0,
) -> CheckReport:
    """Read, validate and decode every image of ``spec``; optionally write a contact sheet PNG.

    Raises :class:`~equinv.errors.InputError` on the first bad input unless ``skip_bad``.
    """
    log = SkipLog(skip_bad=skip_bad)
    index = read_index(spec, log)
    ds = LandmarkDataset(index, pre)
    ds.prepare(log, workers=workers, progress=progress)
    valid = ds.valid
    vis = ds.visible[valid]
    sizes = Counter(tuple(index.records[j].meta["size"]) for j in valid)
    report = CheckReport(
        spec=spec,
        images=len(valid),
        annotated=int(vis.any(axis=1).sum()) if vis.shape[1] else 0,
        landmarks=len(index.names),
        visible_points=int(vis.sum()),
        names=index.names,
        sizes=sizes,
        skipped=[str(s) for s in log.skips],
    )
    if sheet is not None and len(ds):
        from equinv.viz.contact_sheet import contact_sheet

        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(ds), size=min(n_sheet, len(ds)), replace=False))
        samples = [center_view(ds.sample(int(i)), ds.pre) for i in pick]
        sheet.parent.mkdir(parents=True, exist_ok=True)
        contact_sheet(samples, sheet, title=spec)
        report.sheet = sheet
    return report
