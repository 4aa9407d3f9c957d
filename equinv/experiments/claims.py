"""The paper's headline claims, each checked against our numbers: holds / does not hold / not run.

A claim is a comparison of named numbers (:mod:`~equinv.experiments.collect`). It *holds* when every
comparison it needs goes the paper's way, *does not hold* when one does not, and is *not run* while a
number is missing. The verdict compares means only; where the numbers carry a std over repeats, a
difference smaller than the larger std is flagged.
"""

from __future__ import annotations

from dataclasses import dataclass

from equinv.experiments.collect import Numbers
from equinv.experiments.plan import TRUNK_BENCHMARKS, baseline_pairs, trunk_benchmarks

HOLDS, FAILS, MISSING = "holds", "does not hold", "not run"


@dataclass
class Claim:
    """One claim: the statement, what the paper reports for it, our verdict and the numbers behind it."""

    text: str
    paper: str
    verdict: str
    detail: str

    def line(self) -> str:
        return f"- **{self.text}**: {self.verdict} ({self.detail}). Paper: {self.paper}."


@dataclass
class Cmp:
    """``a`` better than ``b``: lower (errors) or higher (PCK)."""

    a: str
    b: str
    lower: bool = True
    name_a: str = ""
    name_b: str = ""


def _check(nums: Numbers, cmps: list[Cmp]) -> tuple[str, str]:
    parts, verdict = [], HOLDS
    for c in cmps:
        va, vb = nums.get(c.a), nums.get(c.b)
        if va is None or vb is None:
            missing = [k for k, v in ((c.a, va), (c.b, vb)) if v is None]
            return MISSING, "missing " + ", ".join(f"`{k}`" for k in missing)
        ok = va < vb if c.lower else va > vb
        text = f"{c.name_a or c.a} {va:.2f} vs {c.name_b or c.b} {vb:.2f}"
        sd = max(nums.get(f"{c.a}.std", 0.0), nums.get(f"{c.b}.std", 0.0))
        if va == vb:
            text += " (a tie)"
        elif sd and abs(va - vb) < sd:
            text += " (within one std)"
        parts.append(text)
        if not ok:
            verdict = FAILS
    return verdict, "; ".join(parts)


def claim(nums: Numbers, text: str, paper: str, cmps: list[Cmp]) -> Claim:
    """A :class:`Claim` whose verdict is that of all its comparisons."""
    verdict, detail = _check(nums, cmps)
    return Claim(text, paper, verdict, detail)


def best_single_layer(nums: Numbers, layers: list[int]) -> int | None:
    """The single layer with the lowest validation error (never chosen on the test set)."""
    vals = {i: nums[f"faces_regress_layer{i}.val"] for i in layers if f"faces_regress_layer{i}.val" in nums}
    return min(vals, key=vals.get) if vals else None


def face_claims(nums: Numbers, cfg: dict) -> list[Claim]:
    """Claims on 5-point faces: representations, layers, matching (Tables 1-5, 9, 10)."""
    f = cfg["faces"]
    dims = f["project"]["dims"]
    big, k = (max(dims) if dims else None), f["parts"]["nmf_dim"]
    R = "faces_regress_"
    out = [
        claim(nums, "Contrastive hypercolumns beat a random-init network on 5-point faces (test)",
              "ResNet18 2.57 vs 4.00 % IOD on MAFL (Table 5, l.231-233)",
              [Cmp(f"{R}hc.test", f"{R}random.test", name_a="ours", name_b="random")]),
        claim(nums, "Contrastive hypercolumns beat DVE on 5-point faces (test)",
              "ResNet18 2.57 vs DVE SmallNet 3.42 on MAFL (Table 10, l.457, 472)",
              [Cmp(f"{R}hc.test", f"{R}dve.test", name_a="ours", name_b="DVE")]),
    ]
    if k in dims:
        out.append(claim(nums, f"Feature projection beats NMF at the same dimension ({k}-D, test)",
                         "64-D: 2.77 vs 2.80 on MAFL, 7.21 vs 7.60 on AFLW_M (Table 4, l.210-211)",
                         [Cmp(f"{R}proj_d{k}.test", f"{R}nmf{k}.test", name_a="projection", name_b="NMF")]))
    layers = [int(t[-1]) for t in f["regress"].get("single_taps", [])]
    best = best_single_layer(nums, layers)
    if layers:
        verdict = MISSING if best is None else (HOLDS if best == 4 else FAILS)
        vals = ", ".join(f"#{i} {nums[f'{R}layer{i}.val']:.2f}" for i in layers if f"{R}layer{i}.val" in nums)
        out.append(Claim("Layer #4 (conv4_x) is the best single layer (validation split)",
                         "#4 best on all four face benchmarks (Table 3, l.222-225)", verdict,
                         f"best on val: #{best}; {vals}" if best else "missing single-layer runs"))
        cmp = [Cmp(f"{R}hc.test", f"{R}layer{best}.test", name_a="hypercolumn", name_b=f"layer #{best}")] if best \
            else [Cmp(f"{R}hc.test", f"{R}layer4.test")]
        out.append(claim(nums, "The hypercolumn beats the best single layer (test; layer chosen on val)",
                         "2.44 vs 2.73 on MAFL, 6.99 vs 8.83 on AFLW_M (Table 3, ResNet50)", cmp))
    M = "faces_match_"
    out.append(claim(nums, "Raw hypercolumns match poorly across identities: DVE beats them on different-identity "
                     "matching", "6.16 vs DVE 2.38 (Table 1, l.125-126); ResNet18 4.95 vs SmallNet 2.77 (Table 9)",
                     [Cmp(f"{M}dve.diff", f"{M}hc.diff", name_a="DVE", name_b="hypercolumn")]))
    if big:
        out.append(claim(nums, f"Feature projection ({big}-D) improves different-identity matching over the "
                         "hypercolumn", "256-D 2.06 vs 6.16 (Table 1, l.126-127)",
                         [Cmp(f"{M}proj_d{big}.diff", f"{M}hc.diff", name_a="projected", name_b="hypercolumn")]))
        out.append(claim(nums, f"Projected features ({big}-D) beat DVE on different-identity matching",
                         "256-D 2.06 vs DVE Hourglass 2.38 (Table 1); ResNet18 2.20 vs SmallNet 2.77 (Table 9)",
                         [Cmp(f"{M}proj_d{big}.diff", f"{M}dve.diff", name_a="projected", name_b="DVE")]))
    return out


def limited_claims(nums: Numbers, cfg: dict) -> list[Claim]:
    """Claims of Fig. 4a / Table 12 and the text at paper.txt l.186-193."""
    c = cfg["faces"]["limited"]
    sizes, dim = c["n_train"], c["projector_dim"]
    L = "faces_limited_"
    low = [n for n in sizes if n <= 10] or sizes[:1]
    out = [claim(nums, f"Feature projection ({dim}-D) beats the hypercolumn with few annotations (N ≤ 10)",
                 "64-D 24.87 / 15.15 / 13.62 vs 42.69 / 25.74 / 17.61 at N = 1 / 5 / 10 (Table 12, l.526, 530)",
                 [Cmp(f"{L}proj_d{dim}.test.n{n}", f"{L}hc.test.n{n}", name_a=f"proj N={n}", name_b="hc")
                  for n in low]),
           claim(nums, f"With enough annotations (N = {max(sizes)}) the hypercolumn beats DVE",
                 "10.67 vs 12.76 at N = 50, 9.24 vs 11.88 at N = 100 (Table 12, l.525-526)",
                 [Cmp(f"{L}hc.test.n{max(sizes)}", f"{L}dve.test.n{max(sizes)}", name_a="hc", name_b="DVE")])]
    others = [("hc", "hc"), (f"proj_d{dim}", "proj"), ("dve", "DVE")]
    out.append(claim(nums, "Every unsupervised representation beats random init at every number of annotations",
                     "\"all unsupervised learning models ... outperform the randomly initialized baseline\" (l.193)",
                     [Cmp(f"{L}{m}.test.n{n}", f"{L}random.test.n{n}", name_a=f"{lab} N={n}", name_b="random")
                      for m, lab in others for n in sizes]))
    return out


def other_claims(nums: Numbers, cfg: dict) -> list[Claim]:
    """300-W and CUB."""
    W, B = "faces68_regress_", "birds_regress_"
    return [
        claim(nums, "Contrastive hypercolumns beat random init on 300-W (68 landmarks, test)",
              "ResNet18 5.78 vs 9.88 (Table 5, l.231-233)", [Cmp(f"{W}hc.test", f"{W}random.test", name_a="ours",
                                                                   name_b="random")]),
        claim(nums, "DVE beats contrastive hypercolumns on 300-W (the paper's one face benchmark lost)",
              "Hourglass 4.65 vs ResNet50 5.22 (Table 2, l.162, 166); SmallNet 5.75 vs ResNet18 5.78",
              [Cmp(f"{W}dve.test", f"{W}hc.test", name_a="DVE", name_b="ours")]),
        claim(nums, "Contrastive hypercolumns beat DVE on birds (PCK)",
              "ResNet18 62.24 vs DVE Hourglass 61.91 (Table 2, l.162, 164)",
              [Cmp(f"{B}hc.test.pck", f"{B}dve.test.pck", lower=False, name_a="ours", name_b="DVE")]),
        claim(nums, "Contrastive hypercolumns beat random init on birds (PCK)",
              "62.24 vs 52.64 for a ResNet18 trained from scratch (Table 13, l.539, 541)",
              [Cmp(f"{B}hc.test.pck", f"{B}random.test.pck", lower=False, name_a="ours", name_b="random")]),
    ]


def _hc_claims(nums: Numbers, cfg: dict, key: str, lab: str, what: str, short: str,
               benches: list[str], match: bool) -> list[Claim]:
    """A preset's hypercolumn (``what``; its steps' name part ``key``) against random init and DVE on the
    ``benches`` it is regressed on (5-point faces, 300-W) and, with ``match``, on different-identity matching."""
    R, W, M = "faces_regress_", "faces68_regress_", "faces_match_"
    out = []
    if "face5" in benches:
        out += [
            claim(nums, f"{lab}: {what} beats a random-init network on 5-point faces (test)",
                  "ResNet18 2.57 vs 4.00 % IOD on MAFL (Table 5, l.231-233)",
                  [Cmp(f"{R}{key}.test", f"{R}random.test", name_a=short, name_b="random")]),
            claim(nums, f"{lab}: {what} beats DVE trained for the paper recipe's wall-clock on 5-point faces (test)",
                  "ResNet18 2.57 vs DVE SmallNet 3.42 on MAFL (Table 10, l.457, 472)",
                  [Cmp(f"{R}{key}.test", f"{R}dve.test", name_a=short, name_b="DVE")]),
        ]
    if "face68" in benches and "faces68" in cfg:
        out.append(claim(nums, f"{lab}: {what} beats random init on 300-W (test)",
                         "ResNet18 5.78 vs 9.88 (Table 5, l.231-233)",
                         [Cmp(f"{W}{key}.test", f"{W}random.test", name_a=short, name_b="random")]))
    if match:
        out.append(claim(nums, f"{lab}: {what} beats random init on different-identity matching",
                         "ResNet18 4.95 (Table 9, l.432) vs random ResNet50 10.03 (l.409)",
                         [Cmp(f"{M}{key}.diff", f"{M}random.diff", name_a=short, name_b="random")]))
    return out


def preset_claims(nums: Numbers, cfg: dict) -> list[Claim]:
    """The targets a preset is for (issue 18): at the paper recipe's wall-clock, beat random init and DVE.

    A preset without pretraining (``"pretrain": null``) is a baseline: only its projections and tuned trunks
    are claimed (a tuned trunk's hypercolumn on the benchmarks its variant is scored on)."""
    M = "faces_match_"
    out = []
    for p in cfg.get("presets", []):
        n, lab = p["name"], p["label"]
        dims = p.get("project", {}).get("dims", [])
        if p.get("pretrain") is not None:
            out += _hc_claims(nums, cfg, f"{n}_hc", lab, "the contrastive hypercolumn", n, list(TRUNK_BENCHMARKS),
                              True)
        if dims:
            big = max(dims)
            out.append(claim(nums, f"{lab}: projected features ({big}-D) beat DVE on different-identity matching",
                             "256-D 2.06 vs DVE Hourglass 2.38 (Table 1); ResNet18 2.20 vs SmallNet 2.77 (Table 9)",
                             [Cmp(f"{M}{n}_proj_d{big}.diff", f"{M}dve.diff", name_a=f"{n} projected",
                                  name_b="DVE")]))
            for v in p["project"].get("variants", []):
                out.append(claim(nums, f"{lab}: projected features ({big}-D, {v['label']}) beat DVE on "
                                 "different-identity matching",
                                 "256-D 2.06 vs DVE Hourglass 2.38 (Table 1); ResNet18 2.20 vs SmallNet 2.77 (Table 9)",
                                 [Cmp(f"{M}{n}_proj_{v['name']}_d{big}.diff", f"{M}dve.diff",
                                      name_a=f"{n} projected ({v['name']})", name_b="DVE")]))
                # the trunk it fine-tuned is the preset's regression (and matching) backbone too
                out += _hc_claims(nums, cfg, f"{n}_{v['name']}_d{big}_hc", lab,
                                  f"the hypercolumn of the trunk fine-tuned with the projector ({big}-D, "
                                  f"{v['label']})", f"{n} tuned trunk ({v['name']})", trunk_benchmarks(v),
                                  bool(v.get("match_hc")))
        out += _baseline_claims(nums, cfg, p, dims)
    return out


def _baseline_claims(nums: Numbers, cfg: dict, p: dict, dims: list[int]) -> list[Claim]:
    """A no-pretraining preset's ``"baseline_for"`` comparisons (:func:`~equinv.experiments.plan.baseline_pairs`):
    does a MoCo preset's chain match better than the one started from the random network? Each preset sets its
    own epochs and rates."""
    if not dims:
        return []
    M, big, n = "faces_match_", max(dims), p["name"]
    label = {(q["name"], v["name"]): v["label"] for q in cfg.get("presets", [])
             for v in q.get("project", {}).get("variants", [])}
    out = []
    for other, theirs, ours in baseline_pairs(p):
        out.append(claim(nums, f"{other}'s MoCo pretraining pays: its projection ({big}-D, {label[other, theirs]}) "
                         f"matches across identities better than {n}'s ({label[n, ours]}; {p['label']})",
                         "ResNet50 + proj 256-D: contrastive 2.06 vs random 7.04 (Table 9, l.410, 421)",
                         [Cmp(f"{M}{other}_proj_{theirs}_d{big}.diff", f"{M}{n}_proj_{ours}_d{big}.diff",
                              name_a=f"{other} ({theirs})", name_b=f"{n} ({ours})")]))
    return out


def all_claims(nums: Numbers, cfg: dict) -> list[Claim]:
    """Every claim of the paper the plan tests, with its verdict from the collected numbers."""
    return face_claims(nums, cfg) + limited_claims(nums, cfg) + other_claims(nums, cfg) + preset_claims(nums, cfg)
