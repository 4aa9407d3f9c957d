"""The paper's numbers that the results page sets beside ours, transcribed from ``../shared/docs/paper.txt``.

Every row cites its table and the line of ``paper.txt`` it comes from. The paper's scale is not ours:
MoCo for 800 epochs on ~160k aligned CelebA images (batch 256, 4 GPUs), ResNet50 unless a row says
ResNet18, regressors for 120/45/80 epochs on MAFL (19,000 training faces), AFLW_M (10,122), 300-W
(3,148); matching on 1,000 MAFL test faces; CUB on its own 35-species subset. Errors are % of
inter-ocular distance (lower is better), matching errors pixels in the 70-px DVE frame, PCK % (higher
is better).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PaperRow:
    """One row of a paper table: ``values`` by column, optional ``std`` by column."""

    label: str
    values: dict
    table: str
    line: int
    std: dict = field(default_factory=dict)
    note: str = ""
    last_line: int = 0

    def cite(self) -> str:
        lines = f"{self.line}-{self.last_line}" if self.last_line else f"{self.line}"
        return f"{self.table}, paper.txt l.{lines}"


FACE_COLUMNS = ("MAFL", "AFLW_M", "AFLW_R", "300W")


def _faces(label: str, values: tuple, table: str, line: int, note: str = "") -> PaperRow:
    return PaperRow(label, dict(zip(FACE_COLUMNS, values, strict=True)), table, line, note=note)


#: Landmark regression, all annotations (Tables 2, 4, 5, 10).
REGRESSION: dict[str, PaperRow] = {
    "random_r18": _faces("Random ResNet18, hypercolumn", (4.00, 14.20, 10.11, 9.88), "Table 5", 231),
    "random_r50": _faces("Random ResNet50, hypercolumn", (4.72, 16.74, 11.23, 11.70), "Table 10", 449),
    "dve_smallnet": _faces("DVE SmallNet", (3.42, 8.60, 7.79, 5.75), "Table 10", 457),
    "dve_hourglass": _faces("DVE Hourglass", (2.86, 7.53, 6.54, 4.65), "Table 10", 458),
    "r18_hc": _faces("Ours ResNet18, hypercolumn", (2.57, 8.59, 7.38, 5.78), "Table 10", 472),
    "r18_proj256": _faces("Ours ResNet18 + proj 256", (2.71, 7.23, 6.30, 5.20), "Table 10", 473),
    "r18_proj128": _faces("Ours ResNet18 + proj 128", (2.81, 7.30, 6.32, 5.30), "Table 10", 474),
    "r18_proj64": _faces("Ours ResNet18 + proj 64", (2.89, 7.48, 6.43, 5.42), "Table 10", 475),
    "r50_hc": _faces("Ours ResNet50, hypercolumn", (2.44, 6.99, 6.27, 5.22), "Table 10", 460),
    "r50_proj256": _faces("Ours ResNet50 + proj 256", (2.64, 7.17, 6.14, 4.99), "Table 10", 461),
    "r50_proj128": _faces("Ours ResNet50 + proj 128", (2.71, 7.14, 6.14, 5.09), "Table 10", 462),
    "r50_proj64": _faces("Ours ResNet50 + proj 64", (2.77, 7.21, 6.22, 5.19), "Table 10", 463),
    "r50_nmf64": _faces("Ours ResNet50 + NMF 64", (2.80, 7.60, 6.69, 5.62), "Table 4", 211,
                        "ResNet50 only: the paper has no ResNet18 NMF row"),
}

#: Table 3 (ResNet50): single layers #1..#5 and hypercolumns, IOD % (paper.txt l.221-225).
_T3_COLS = ("layer1", "layer2", "layer3", "layer4", "layer5", "hc_l2", "hc_l3", "hc_l4", "hc_l5")
_T3 = {
    "MAFL": ((5.77, 4.58, 3.03, 2.73, 3.66, 2.73, 2.65, 2.44, 2.51), 222),
    "AFLW_M": ((24.20, 21.34, 11.95, 8.83, 11.55, 8.14, 8.31, 6.99, 7.40), 223),
    "AFLW_R": ((16.27, 14.15, 9.66, 7.37, 8.83, 6.95, 6.24, 6.27, 6.34), 224),
    "300W": ((16.45, 13.08, 7.66, 6.01, 7.70, 5.68, 5.28, 5.22, 5.21), 225),
}
_T3_LABELS = ("#1", "#2", "#3", "#4", "#5", "#4-#5", "#3-#5", "#2-#5", "#1-#5")
TABLE3: dict[str, PaperRow] = {
    col: PaperRow(f"ResNet50 {'layer' if i < 5 else 'hypercolumn'} {_T3_LABELS[i]}",
                  {ds: vals[i] for ds, (vals, _) in _T3.items()}, "Table 3", 222, last_line=225)
    for i, col in enumerate(_T3_COLS)
}

#: Landmark matching on MAFL, aligned CelebA (Tables 1 and 9): same / different identity.
MATCHING: dict[str, PaperRow] = {
    "dve_hourglass": PaperRow("DVE Hourglass", {"same": 0.92, "diff": 2.38}, "Table 1", 125),
    "dve_smallnet": PaperRow("DVE SmallNet", {"same": 1.28, "diff": 2.77}, "Table 9", 417),
    "random_r50": PaperRow("Random ResNet50, hypercolumn", {"same": 1.07, "diff": 10.03}, "Table 9", 409,
                           note="ResNet50 only: no random ResNet18 row"),
    "random_r50_proj256": PaperRow("Random ResNet50 + proj 256", {"same": 3.68, "diff": 7.04}, "Table 9", 410,
                                   note="ResNet50 only: no random ResNet18 row"),
    "random_r50_proj128": PaperRow("Random ResNet50 + proj 128", {"same": 3.70, "diff": 7.03}, "Table 9", 411,
                                   note="ResNet50 only: no random ResNet18 row"),
    "random_r50_proj64": PaperRow("Random ResNet50 + proj 64", {"same": 3.71, "diff": 7.10}, "Table 9", 412,
                                  note="ResNet50 only: no random ResNet18 row"),
    "r50_hc": PaperRow("Ours ResNet50, hypercolumn", {"same": 0.73, "diff": 6.16}, "Table 1", 126),
    "r50_proj256": PaperRow("Ours ResNet50 + proj 256", {"same": 0.71, "diff": 2.06}, "Table 1", 127),
    "r50_proj128": PaperRow("Ours ResNet50 + proj 128", {"same": 0.82, "diff": 2.19}, "Table 1", 128),
    "r50_proj64": PaperRow("Ours ResNet50 + proj 64", {"same": 0.92, "diff": 2.62}, "Table 1", 129),
    "r18_hc": PaperRow("Ours ResNet18, hypercolumn", {"same": 0.64, "diff": 4.95}, "Table 9", 432),
    "r18_proj256": PaperRow("Ours ResNet18 + proj 256", {"same": 0.71, "diff": 2.20}, "Table 9", 433),
    "r18_proj128": PaperRow("Ours ResNet18 + proj 128", {"same": 0.82, "diff": 2.31}, "Table 9", 434),
    "r18_proj64": PaperRow("Ours ResNet18 + proj 64", {"same": 1.00, "diff": 2.74}, "Table 9", 435),
}

#: Table 12, limited annotations on AFLW_M: IOD % (mean ± std) per number of annotations; "all" = 10,122.
LIMITED_SIZES = (1, 5, 10, 20, 50, 100, "all")


def _limited(label: str, pairs: tuple, line: int, note: str = "") -> PaperRow:
    values = {n: (p[0] if isinstance(p, tuple) else p) for n, p in zip(LIMITED_SIZES, pairs, strict=True)}
    std = {n: p[1] for n, p in zip(LIMITED_SIZES, pairs, strict=True) if isinstance(p, tuple)}
    return PaperRow(label, values, "Table 12", line, std, note)


LIMITED: dict[str, PaperRow] = {
    "smallnet_random": _limited("None (random SmallNet)", (28.87, 32.85, 22.31, 21.13, None, None, 14.25), 524),
    "dve_hourglass": _limited("DVE Hourglass", ((14.23, 1.54), (12.04, 2.03), (12.25, 2.42), (11.46, 0.83),
                                                (12.76, 0.53), (11.88, 0.16), 7.53), 525),
    "r50_hc": _limited("Ours ResNet50 + hypercolumn", ((42.69, 5.10), (25.74, 2.33), (17.61, 0.75), (13.35, 0.33),
                                                       (10.67, 0.35), (9.24, 0.35), 6.99), 526),
    "r50_conv4": _limited("Ours ResNet50 + conv4", ((43.74, 2.78), (21.25, 1.14), (16.51, 1.43), (12.45, 0.66),
                                                    (10.03, 0.21), (9.95, 0.17), 8.05), 527),
    "r50_proj256": _limited("Ours ResNet50 + 256-D proj", ((28.00, 1.39), (15.85, 0.86), (12.98, 0.16),
                                                           (11.18, 0.19), (9.56, 0.44), (9.30, 0.20), 7.17), 528),
    "r50_proj128": _limited("Ours ResNet50 + 128-D proj", ((27.31, 1.39), (18.66, 4.59), (13.39, 0.30),
                                                           (11.77, 0.85), (10.25, 0.22), (9.46, 0.05), 7.14), 529),
    "r50_proj64": _limited("Ours ResNet50 + 64-D proj", ((24.87, 2.67), (15.15, 0.53), (13.62, 1.08),
                                                         (11.77, 0.68), (11.57, 0.03), (10.06, 0.45), 7.21), 530),
    "r18_hc": _limited("Ours ResNet18 + hypercolumn", ((47.15, 6.88), (24.99, 3.21), (17.40, 0.37), (13.87, 0.66),
                                                       (11.04, 0.92), (9.93, 0.39), 8.59), 531),
    "r18_conv4": _limited("Ours ResNet18 + conv4", ((38.05, 5.25), (21.71, 1.57), (16.60, 0.61), (14.48, 0.69),
                                                    (12.20, 0.36), (11.02, 0.06), 10.61), 532),
}

#: CUB PCK % per number of annotations (Table 13, l.539-545; 1241 = all, also Table 2, l.162-167).
CUB_SIZES = (10, 50, 100, 250, 500, 1241)
CUB: dict[str, PaperRow] = {
    "random_r18": PaperRow("None (ResNet18, trained from scratch)",
                           dict(zip(CUB_SIZES, (2.97, 10.07, 11.31, 24.82, 38.86, 52.64), strict=True)), "Table 13",
                           539, note="trained from scratch on CUB (Fig. 4b), not a frozen random network"),
    "dve_hourglass": PaperRow("DVE Hourglass", dict(zip(CUB_SIZES, (37.82, 51.64, 54.58, 56.78, 58.64, 61.91),
                                                        strict=True)), "Table 13", 540),
    "r18_hc": PaperRow("Ours ResNet18 + hypercolumn", dict(zip(CUB_SIZES, (13.41, 25.91, 34.02, 51.70, 56.77, 62.24),
                                                               strict=True)), "Table 13", 541),
    "r50_hc": PaperRow("Ours ResNet50 + hypercolumn", dict(zip(CUB_SIZES, (13.87, 29.28, 40.86, 57.96, 64.55, 68.63),
                                                               strict=True)), "Table 13", 542),
}


def regression_key(method: str, arch: str, dve_arch: str = "smallnet", dim: int | None = None) -> str | None:
    """The :data:`REGRESSION` row that corresponds to one of our face regressions."""
    r = "r50" if arch.startswith("resnet50") else "r18"
    if method == "hc":
        return f"{r}_hc"
    if method == "random":
        return f"random_{r}"
    if method == "dve":
        return f"dve_{dve_arch}"
    if method == "proj" and dim in (64, 128, 256):
        return f"{r}_proj{dim}"
    if method == "nmf" and dim == 64:
        return "r50_nmf64"
    return None


def matching_key(method: str, arch: str, dve_arch: str = "smallnet", dim: int | None = None) -> str | None:
    """The :data:`MATCHING` row that corresponds to one of our matching runs."""
    r = "r50" if arch.startswith("resnet50") else "r18"
    if method == "hc":
        return f"{r}_hc"
    if method == "random":
        return "random_r50"
    if method == "dve":
        return f"dve_{dve_arch}"
    if method == f"random_proj_d{dim}" and dim in (64, 128, 256):  # the paper's projector on the frozen random net
        return f"random_r50_proj{dim}"
    if method.startswith("proj") and dim in (64, 128, 256):
        return f"{r}_proj{dim}"
    return None
