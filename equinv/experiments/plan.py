"""The experiment plan: named steps built from a budget config.

Each :class:`Step` is one ``equinv`` command (its argv), the directory it writes, the files that say it
is done, the steps it depends on, and the table it feeds. Steps are listed in a valid run order.

Layout under the run root ``OUT`` (``runs/repro`` by default)::

    faces/pretrain, faces/dve, faces/project_d{64,128,256}, faces/parts_nmf64, faces/parts_pca
    faces/regress/{hc,random,dve,hc_std,proj_d*,nmf64,layer1..5,hc_l*}   Tables 2, 3, 4, 5, 10
    faces/match/{hc,random,dve,proj_d*}, faces/match_fig/{hc,proj_d*}   Tables 1, 9; Fig. 2
    faces/limited/{hc,proj_d64,dve,random}, faces/limited/compare        Table 12 / Fig. 4a
    faces68/regress/{hc,random,dve}                                      300-W (Table 10 column)
    birds/pretrain, birds/dve, birds/regress/{hc,random,dve}            CUB (Tables 2, 13)
    faces_NAME/{pretrain,project_dD,project_V_dD}, faces/regress/NAME_hc, faces68/regress/NAME_hc,
    faces/match/{NAME_hc,NAME_proj_dD,NAME_proj_V_dD}                    presets (config ``presets``;
    faces/regress/NAME_V_dD_hc                                            V: a projector variant; its trunk's
                                                                          hypercolumn when it trains one;
                                                                          "pretrain": null: no MoCo, no NAME_hc)
    feature_cache/                                                       frozen features, shared
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from equinv.errors import InputError
from equinv.experiments import estimate as est

#: The file whose presence means an interrupted training step can continue with ``--resume``.
RESUME_FILE = "checkpoints/last.safetensors"
#: Written explicitly on the projected / NMF regressions (also eval regress's ``auto`` for them): their channels
#: are ~1/(H·W) (spatial softmax) or on NMF's scale, far from the O(1) the reference regressor assumes; without
#: it every prediction is the mean shape in a CPU-length run (experiments/findings.md).
SCALED = ["--input-scale", "std"]
#: Projected features are read before the reference projector's spatial softmax (the paper's Φ' = wᵀΦ); the
#: softmax maps (its matching descriptor) regress far worse even scaled (17.4 vs 13.2 % IOD on the
#: validation split, 64-D; experiments/findings.md). Eval regress's default, written out.
PROJ_REGRESS = ["--proj-readout", "linear", *SCALED]

#: Table 3: single taps by the paper's layer number (#1 = the post-maxpool map, #5 = conv5_x).
LAYER_NUMBER = {"conv1": 1, "conv2": 2, "conv3": 3, "conv4": 4, "conv5": 5}
#: Landmarks per benchmark (the regression cost scales with them).
LANDMARKS = {"face5": 5, "face68": 68, "bird": 15}
#: The experiment (config section, run-root folder, step-name prefix) of each benchmark.
EXPERIMENT = {"face5": "faces", "face68": "faces68", "bird": "birds"}
#: The table a preset's (or a tuned trunk's) regression row sits in, per benchmark a variant's ``"regress"`` may name.
PRESET_TABLES = {"face5": "Table 2/5/10 (preset)", "face68": "300-W (preset)"}


@dataclass
class Step:
    """One command of the plan.

    ``argv`` may hold ``{minutes}``: the runner fills in the wall-clock budget (``minutes``, or the
    wall-clock that step ``minutes_from`` used, less what earlier attempts already spent).
    """

    name: str
    argv: list[str]
    out: str
    outputs: list[str]
    deps: list[str] = field(default_factory=list)
    table: str = ""
    label: str = ""
    resume_argv: list[str] | None = None
    minutes: float | None = None
    minutes_from: str | None = None
    estimate_min: float = 0.0
    meta: dict = field(default_factory=dict)

    def command(self, argv: list[str] | None = None) -> str:
        """The shell command line of ``argv`` (default: the step's own)."""
        return shlex.join(["equinv", *(self.argv if argv is None else argv)])


class _Builder:
    """Builds the steps of one config into ``self.steps`` (one method per experiment)."""

    def __init__(self, cfg: dict, root: str):
        self.cfg, self.root = cfg, Path(root)
        self.data, self.counts, self.rates = cfg["data"], cfg["counts"], cfg["rates"]
        self.arch = cfg.get("arch", "resnet18")
        self.dev = ["--device", cfg["device"]] if cfg.get("device") else []
        self.cache = str(self.root / "feature_cache")
        self.steps: list[Step] = []

    def d(self, *parts: str) -> str:
        return str(self.root.joinpath(*parts))

    def add(self, step: Step) -> Step:
        self.steps.append(step)
        return step

    # -- representation learning -------------------------------------------------------------------------
    def pretrain(self, prefix: str, data: list[str], c: dict, n: int, table: str, label: str = "") -> Step:
        out = self.d(prefix, "pretrain")
        cap = ["--max-minutes", "{minutes}"] if c.get("max_minutes") else []
        data_args = [a for spec in data for a in ("--data", spec)]
        argv = ["pretrain", *data_args, "--arch", self.arch, "--epochs", str(c["epochs"]), "--batch-size",
                str(c["batch_size"]), *cap, "--out", out, *self.dev, "--quiet", *c.get("extra", [])]
        resume = ["pretrain", "--resume", out, "--epochs", str(c["epochs"]), *cap, *self.dev, "--quiet"]
        return self.add(Step(f"{prefix}_pretrain", argv, out, ["backbone.safetensors"], [], table,
                             f"MoCo {self.arch}" + (f", {label}" if label else ""), resume, c.get("max_minutes"), None,
                             est.pretrain_minutes(self.rates, n, c["epochs"], c.get("max_minutes"))))

    def dve(self, prefix: str, data: list[str], c: dict, n: int, table: str) -> Step:
        out = self.d(prefix, "dve")
        same = c.get("same_wall_as_pretrain")
        cap = ["--max-minutes", "{minutes}"] if c.get("max_minutes") or same else []
        data_args = [a for spec in data for a in ("--data", spec)]
        argv = ["pretrain", "--method", "dve", "--arch", c["arch"], *data_args, "--epochs", str(c["epochs"]), *cap,
                "--out", out, *self.dev, "--quiet", *c.get("extra", [])]
        resume = ["pretrain", "--resume", out, *cap, *self.dev, "--quiet"]
        pre = f"{prefix}_pretrain"
        estimate = est.pretrain_minutes(self.rates, n, c["epochs"], c.get("max_minutes"), "dve_img_s")
        if same:
            estimate = next(s.estimate_min for s in self.steps if s.name == pre)
        return self.add(Step(f"{prefix}_dve", argv, out, ["descriptor.safetensors"], [pre] if same else [], table,
                             f"DVE {c['arch']}", resume, c.get("max_minutes"), pre if same else None, estimate,
                             {"arch": c["arch"]}))

    def project(self, prefix: str, p: dict, dim: int, label: str = "", variant: dict | None = None,
                backbone: str | None = None) -> Step:
        """The equivariant projector of ``dim`` channels on ``PREFIX/pretrain``'s backbone (``backbone``:
        another one, e.g. ``"random"``, with no pretraining step to wait for); a ``variant``
        (``{"name", "label", "extra"}``, optionally ``"rate"``: the key of its training rate in ``rates``,
        ``"epochs"``: its own, ``"max_images"``: its own training-image cap (``null``: every image),
        ``"init"``: the name of the variant it starts from, ``""`` for the plain projector;
        ``"regress"``: also regress the hypercolumn of the trunk it trains, on 5-point faces (``true``) or on
        the benchmarks it lists (``["face5", "face68"]``); ``"match_hc": true``: also match with that
        hypercolumn)
        adds its flags and writes ``project_NAME_dD``."""
        d = self.data
        v = variant or {}
        tag = f"{v['name']}_d{dim}" if variant else f"d{dim}"
        extra = [*p.get("extra", []), *v.get("extra", [])]
        out = self.d(prefix, f"project_{tag}")
        cap = v["max_images"] if "max_images" in v else p.get("max_images")
        lim = ["--max-images", str(cap)] if cap else []
        deps = [] if backbone else [f"{prefix}_pretrain"]
        if "init" in v:
            start = f"project_{v['init']}_d{dim}" if v["init"] else f"project_d{dim}"
            extra += ["--init", self.d(prefix, start)]
            deps.append(f"{prefix}_{start}")
        epochs = v.get("epochs", p["epochs"])
        argv = ["project", "--backbone", backbone or self.d(prefix, "pretrain"), "--arch", self.arch, "--dim",
                str(dim),
                "--data", d["face_pretrain"], "--val", d["match_val"], "--val-pairs", str(p["val_pairs"]),
                "--epochs", str(epochs), *lim, "--out", out, *self.dev, "--quiet", *extra]
        n = min(self.counts["face_pretrain"], cap or 10**9)
        what = f"projector {dim}-D" + (f" ({v['label']})" if variant else "")
        return self.add(Step(f"{prefix}_project_{tag}", argv, out, ["checkpoints/best.safetensors"],
                             deps, "projector", what + (f", {label}" if label else ""),
                             ["project", "--resume", out, *self.dev, "--quiet"],
                             estimate_min=est.project_minutes(self.rates, n, epochs, p["val_pairs"],
                                                              v.get("rate", "project_img_s")),
                             meta={"dim": dim}))

    def faces_representations(self) -> None:
        f, d = self.cfg["faces"], self.data
        self.pretrain("faces", [d["face_pretrain"]], f["pretrain"], self.counts["face_pretrain"], "all face tables")
        self.dve("faces", [d["face_pretrain"]], f["dve"], self.counts["face_pretrain"], "DVE baseline")
        for dim in f["project"]["dims"]:
            self.project("faces", f["project"], dim)
        parts = f["parts"]
        for method, dim in (("nmf", parts["nmf_dim"]), ("pca", parts.get("pca_dim"))):
            if not dim:
                continue
            name = f"parts_nmf{dim}" if method == "nmf" else "parts_pca"
            out = self.d("faces", name)
            argv = ["parts", "--backbone", self.d("faces", "pretrain"), "--arch", self.arch, "--data",
                    d["face_pretrain"], "--method", method, "--dim", str(dim), "--max-images",
                    str(parts["max_images"]), "--out", out, *self.dev, "--quiet", *parts.get("extra", [])]
            self.add(Step(f"faces_{name}", argv, out, ["parts.safetensors"], ["faces_pretrain"], "Fig. 5 / Table 4",
                          f"{method.upper()} {dim}", estimate_min=est.small_minutes(self.rates, parts["max_images"]),
                          meta={"method": method, "dim": dim}))

    # -- landmark regression -------------------------------------------------------------------------------
    def regress(self, name: str, bench: str, backbone: str, deps: list[str], c: dict, table: str, label: str,
                extra: list[str] | None = None, grid: int = 48, meta: dict | None = None) -> Step:
        """An all-annotation regression on benchmark ``bench`` (face5, face68, bird); tests: test (+ val)."""
        d = self.data
        val = d.get(f"{bench}_val")
        tests = [d[f"{bench}_test"]] + ([val] if val else [])
        exp = EXPERIMENT[bench]
        out = self.d(exp, "regress", name)
        argv = ["eval", "regress", "--backbone", backbone, "--arch", self.arch, "--train", d[f"{bench}_train"],
                *(["--val", val] if val else []), *[a for t in tests for a in ("--test", t)],
                "--epochs", str(c["epochs"]), *(extra or []), "--cache-dir", self.cache, "--out", out, *self.dev,
                "--quiet", *c.get("extra", [])]
        n_tests = [self.counts[f"{bench}_test"]] + ([self.counts[f"{bench}_val"]] if val else [])
        estimate = est.regress_minutes(self.rates, self.counts[f"{bench}_train"], self.counts.get(f"{bench}_val", 0)
                                       if val else 0, n_tests, c["epochs"], LANDMARKS[bench], grid)
        m = {"tests": ["test", "val"] if val else ["test"], "bench": bench, **(meta or {})}
        return self.add(Step(f"{exp}_regress_{name}", argv, out, ["regression.json"], deps, table, label,
                             estimate_min=estimate, meta=m))

    def _methods(self, prefix: str, bench: str, c: dict, table: str, extra: list[str] | None = None) -> None:
        """Our hypercolumn, random init and DVE on one benchmark."""
        dve_arch = self.cfg[prefix]["dve"]["arch"]
        spec = {
            "hc": (self.d(prefix, "pretrain"), [f"{prefix}_pretrain"], f"ours, {self.arch} hypercolumn", 48),
            "random": ("random", [], f"random-init {self.arch} hypercolumn", 48),
            "dve": (self.d(prefix, "dve"), [f"{prefix}_dve"], f"DVE {dve_arch}", est.DVE_GRID.get(dve_arch, 48)),
        }
        for m in c["methods"]:
            backbone, deps, label, grid = spec[m]
            self.regress(m, bench, backbone, deps, c, table, label, extra, grid, {"method": m})

    def faces_regression(self) -> None:
        f = self.cfg["faces"]
        c = f["regress"]
        P = self.d("faces", "pretrain")
        self._methods("faces", "face5", {**c, "methods": ["hc", "random", "dve"]}, "Table 2/5/10")
        # the control: the hypercolumn with the per-channel scaling that the projected / NMF rows need
        self.regress("hc_std", "face5", P, ["faces_pretrain"], c, "Table 2/10 (control)",
                     f"ours, {self.arch} hypercolumn, --input-scale std (control)", ["--input-scale", "std"],
                     meta={"method": "hc_std"})
        for dim in f["project"]["dims"]:
            extra = ["--source", "projected", "--projector", self.d("faces", f"project_d{dim}"), *PROJ_REGRESS]
            self.regress(f"proj_d{dim}", "face5", P, ["faces_pretrain", f"faces_project_d{dim}"], c, "Table 2/4/10",
                         f"ours + projector {dim}-D", extra, meta={"dim": dim, "method": "proj"})
        k = f["parts"]["nmf_dim"]
        extra = ["--source", "nmf", "--parts", self.d("faces", f"parts_nmf{k}", "parts.safetensors"), *SCALED]
        self.regress(f"nmf{k}", "face5", P, ["faces_pretrain", f"faces_parts_nmf{k}"], c, "Table 4", f"ours + NMF {k}",
                     extra, meta={"dim": k, "method": "nmf"})
        for tap in c.get("single_taps", []):
            i = LAYER_NUMBER[tap]
            self.regress(f"layer{i}", "face5", P, ["faces_pretrain"], c, "Table 3", f"single layer #{i} ({tap})",
                         ["--taps", tap], est.TAP_GRID[tap], {"layer": i, "tap": tap})
        for n in c.get("extra_layers", []):
            self.regress(f"hc_l{n}", "face5", P, ["faces_pretrain"], c, "Table 3", f"hypercolumn --layers {n}",
                         ["--layers", str(n)], meta={"layers": n})

    # -- matching -------------------------------------------------------------------------------------------
    def match(self, name: str, backbone: str, extra: list[str], deps: list[str], label: str, meta: dict) -> Step:
        """Same- and different-identity matching on the held-out CelebA faces (``faces/match/NAME``)."""
        m = self.cfg["faces"]["match"]
        out = self.d("faces", "match", name)
        argv = ["eval", "match", "--backbone", backbone, "--arch", self.arch, "--data", self.data["match_test"],
                *extra, "--pairs", str(m["pairs"]), "--out", out, *self.dev, "--quiet"]
        return self.add(Step(f"faces_match_{name}", argv, out, ["match.json"], deps, "Table 1/9", label,
                             estimate_min=est.match_minutes(self.rates, m["pairs"]), meta=meta))

    def faces_matching(self) -> None:
        f, d = self.cfg["faces"], self.data
        m = f["match"]
        P = self.d("faces", "pretrain")
        rows = [("hc", P, [], ["faces_pretrain"], f"ours, {self.arch} hypercolumn", {}),
                ("random", "random", [], [], f"random-init {self.arch} hypercolumn", {}),
                ("dve", self.d("faces", "dve"), [], ["faces_dve"], f"DVE {f['dve']['arch']} (same wall-clock)", {})]
        for dim in f["project"]["dims"]:
            rows.append((f"proj_d{dim}", P, ["--source", "projected", "--projector",
                                             self.d("faces", f"project_d{dim}")],
                         ["faces_pretrain", f"faces_project_d{dim}"], f"ours + projector {dim}-D", {"dim": dim}))
        for name, backbone, extra, deps, label, meta in rows:
            self.match(name, backbone, extra, deps, label, {"method": name, **meta})
        big = max(f["project"]["dims"]) if f["project"]["dims"] else None
        for name, extra, deps in (("hc", [], ["faces_pretrain"]),
                                  *([(f"proj_d{big}", ["--projector", self.d("faces", f"project_d{big}")],
                                      ["faces_pretrain", f"faces_project_d{big}"])] if big else [])):
            out = self.d("faces", "match_fig", name)
            n = str(m["figure_targets"])
            argv = ["match", "--backbone", P, "--arch", self.arch, "--reference", f"{d['match_test']}#0",
                    "--targets", d["match_test"], *extra, "--max-targets", n, "--n-figure", n, "--out", out,
                    *self.dev, "--quiet"]
            self.add(Step(f"faces_matchfig_{name}", argv, out, ["matches.png"], deps, "Fig. 2", name,
                          estimate_min=est.small_minutes(self.rates, m["figure_targets"])))

    # -- limited annotations ----------------------------------------------------------------------------------
    def faces_limited(self) -> None:
        f, d = self.cfg["faces"], self.data
        c = f["limited"]
        P, dim = self.d("faces", "pretrain"), c["projector_dim"]
        spec = {
            "hc": ("hc", P, [], ["faces_pretrain"], f"ours, {self.arch} hypercolumn"),
            "proj": (f"proj_d{dim}", P, ["--source", "projected", "--projector", self.d("faces", f"project_d{dim}"),
                                         *PROJ_REGRESS],
                     ["faces_pretrain", f"faces_project_d{dim}"], f"ours + projector {dim}-D"),
            "dve": ("dve", self.d("faces", "dve"), [], ["faces_dve"], f"DVE {f['dve']['arch']} (same wall-clock)"),
            "random": ("random", "random", [], [], f"random-init {self.arch} hypercolumn"),
        }
        def step(m: str, name: str, sizes: list[int], probe: dict | None = None) -> Step:
            _, backbone, extra, deps, label = spec[m]
            out = self.d("faces", "limited", name)
            argv = ["eval", "regress", "--backbone", backbone, "--arch", self.arch, *extra, "--train",
                    d["face5_train"], "--test", d["face5_test_limited"], "--epochs", str(c["epochs"]), "--n-train",
                    ",".join(str(n) for n in sizes), "--repeats", str(c["repeats"]), "--tps-aug",
                    "--tps-copies", str(c["tps_copies"]), "--cache-dir", self.cache, "--out", out, *self.dev,
                    "--quiet", *c.get("extra", []), *(probe or {}).get("extra", [])]
            grid = est.DVE_GRID.get(f["dve"]["arch"], 48) if m == "dve" else 48
            estimate = est.limited_minutes(self.rates, self.counts["face5_train"], self.counts["face5_test_limited"],
                                           sizes, c["repeats"], c["epochs"], c["tps_copies"], 5, grid)
            if probe:
                label = f"{label}, {probe['what']} (probe)"
            return self.add(Step(f"faces_limited_{name}", argv, out, ["regression.json"], deps,
                                 "Table 12 (probe)" if probe else "Table 12 / Fig. 4a", label, estimate_min=estimate,
                                 meta={"method": m, "probe": bool(probe)}))

        names, outs, labels = [], [], []
        for m in c["methods"]:
            s = step(m, spec[m][0], c["n_train"])
            names.append(s.name)
            outs.append(s.out)
            labels.append(s.label.replace(",", ""))
        # probes of why the curves look as they do: one change to a method's command, at some of the sizes
        for probe in c.get("probes", []):
            step(probe["method"], f"{spec[probe['method']][0]}_{probe['name']}", probe.get("n_train", c["n_train"]),
                 probe)
        out = self.d("faces", "limited", "compare")
        self.add(Step("faces_limited_compare", ["report", *outs, "--names", ",".join(labels), "--out", out], out,
                      ["compare.md"], names, "Fig. 4a", "limited-annotation curves",
                      estimate_min=est.small_minutes(self.rates)))

    def faces68(self) -> None:
        self._methods("faces", "face68", self.cfg["faces68"]["regress"], "300-W (Table 10)")

    def birds(self) -> None:
        b, d = self.cfg["birds"], self.data
        n = self.counts["bird_pretrain"]
        self.pretrain("birds", list(d["bird_pretrain"]), b["pretrain"], n, "birds")
        self.dve("birds", list(d["bird_pretrain"]), b["dve"], n, "birds")
        self._methods("birds", "bird", b["regress"], "CUB (Tables 2, 13)", ["--paper-pck"])

    # -- presets: other pretraining recipes, scored with the same commands as the paper's ------------------------
    def presets(self) -> None:
        """Each preset of the config (``presets``): its own MoCo run on the face data (``faces_NAME/``), scored
        with the paper recipe's commands: 5-point and 300-W regression, matching of the hypercolumn and of the
        projection. The paper's tables keep the paper recipe; a preset adds rows beside it.

        A preset with ``"pretrain": null`` has no MoCo step: its projectors start from the seeded random network
        (a baseline of what the projector's own training does without contrastive pretraining); the random
        network's hypercolumn rows already exist, so only its projections (and tuned trunks) are scored."""
        d = self.data
        _check_baselines(self.cfg.get("presets", []))
        _check_trunk_benchmarks(self.cfg)
        for p in self.cfg.get("presets", []):
            name, label = p["name"], p["label"]
            prefix = f"faces_{name}"
            meta = {"method": "hc", "preset": name}
            if p.get("pretrain") is None:
                P, deps, base, who, kind = "random", [], "random", f"random-init {self.arch}", "random_"
                hc = f"{who} hypercolumn, {label}"
            else:
                pre = self.pretrain(prefix, [d["face_pretrain"]], p["pretrain"], self.counts["face_pretrain"],
                                    f"preset {name}", label)
                P, deps, base, who, kind = pre.out, [pre.name], None, "ours", ""
                hc = f"ours, {self.arch} hypercolumn, {label}"
                self._preset_regressions(f"{name}_hc", list(PRESET_TABLES), P, deps, hc, meta)
                self.match(f"{name}_hc", P, [], deps, hc, meta)
            for dim in p.get("project", {}).get("dims", []):
                proj = self.project(prefix, p["project"], dim, label, backbone=base)
                self.match(f"{name}_proj_d{dim}", P, ["--source", "projected", "--projector", proj.out],
                           [*deps, proj.name], f"{who} + projector {dim}-D, {label}",
                           {"method": f"{kind}proj_d{dim}", "dim": dim, "preset": name})
                for v in p["project"].get("variants", []):
                    proj = self.project(prefix, p["project"], dim, label, v, backbone=base)
                    self.match(f"{name}_proj_{v['name']}_d{dim}", P, ["--source", "projected", "--projector",
                                                                       proj.out], [*deps, proj.name],
                               f"{who} + projector {dim}-D ({v['label']}), {label}",
                               {"method": f"{kind}proj_{v['name']}_d{dim}", "dim": dim, "preset": name})
                    # a variant that trains the trunk: its hypercolumn as a backbone
                    tuned = f"{name}_{v['name']}_d{dim}_hc"
                    tlabel = f"{hc}, trunk after the projector {dim}-D ({v['label']})"
                    tmeta = {"method": f"{kind}tuned_hc" if kind else "hc", "preset": name, "variant": v["name"]}
                    self._preset_regressions(tuned, trunk_benchmarks(v), proj.out, [*deps, proj.name], tlabel, tmeta)
                    if v.get("match_hc"):
                        self.match(tuned, proj.out, [], [*deps, proj.name], tlabel, tmeta)

    def _preset_regressions(self, name: str, benches: list[str], backbone: str, deps: list[str], label: str,
                            meta: dict) -> None:
        """A preset's hypercolumn regressed with the paper recipe's settings on each of ``benches`` the config
        has."""
        for bench in benches:
            if EXPERIMENT[bench] in self.cfg:
                self.regress(name, bench, backbone, deps, self.cfg[EXPERIMENT[bench]]["regress"],
                             PRESET_TABLES[bench], label, meta=meta)


#: The benchmarks a variant's ``"regress"`` may name (``true``: 5-point faces only).
TRUNK_BENCHMARKS = tuple(PRESET_TABLES)


def trunk_benchmarks(v: dict) -> list[str]:
    """The benchmarks on which a projector variant's fine-tuned trunk is regressed: ``"regress": true`` is
    5-point faces, a list names them (:data:`TRUNK_BENCHMARKS`); none without the key."""
    r = v.get("regress")
    return ["face5"] if r is True else list(r or [])


def _variant_names(p: dict) -> list[str]:
    return [v["name"] for v in p.get("project", {}).get("variants", [])]


def baseline_pairs(p: dict) -> list[tuple[str, str, str]]:
    """``(MoCo preset, its variant, this preset's variant)`` for each comparison a no-pretraining preset's
    ``"baseline_for"`` asks for: a preset name pairs variants by name; ``{"preset": NAME, "pairs": {THEIRS:
    OURS}}`` pairs them explicitly (e.g. two chains with different epochs at the same wall-clock)."""
    out = []
    for item in p.get("baseline_for", []):
        if isinstance(item, str):
            out += [(item, v, v) for v in _variant_names(p)]
        else:
            out += [(item["preset"], theirs, ours) for theirs, ours in item.get("pairs", {}).items()]
    return out


def _check_baselines(presets: list[dict]) -> None:
    """A ``"baseline_for"`` list belongs to a preset without pretraining and names MoCo presets of the config
    and variants both presets have."""
    moco = {p["name"]: p for p in presets if p.get("pretrain") is not None}
    for p in presets:
        pairs = baseline_pairs(p)
        if p.get("baseline_for") and p.get("pretrain") is not None:
            raise InputError(f"preset {p['name']}: \"baseline_for\" is for a preset without pretraining "
                             "(\"pretrain\": null)")
        unknown = sorted({o for o, _, _ in pairs if o not in moco})
        if unknown:
            raise InputError(f"preset {p['name']}: \"baseline_for\" names {unknown}, not MoCo presets of this "
                             f"config ({', '.join(sorted(moco)) or 'none'})")
        for other, theirs, ours in pairs:
            if theirs not in _variant_names(moco[other]) or ours not in _variant_names(p):
                raise InputError(f"preset {p['name']}: \"baseline_for\" pairs {other}'s variant {theirs!r} with "
                                 f"{ours!r}; {other} has {_variant_names(moco[other])}, {p['name']} has "
                                 f"{_variant_names(p)}")


def _check_trunk_benchmarks(cfg: dict) -> None:
    """A variant's ``"regress"`` is ``true``, ``false`` or a list of benchmarks the config has."""
    have = {b for b in TRUNK_BENCHMARKS if EXPERIMENT[b] in cfg}
    for p in cfg.get("presets", []):
        for v in p.get("project", {}).get("variants", []):
            r = v.get("regress")
            if r is None or isinstance(r, bool):
                continue
            bad = [b for b in r if b not in have] if isinstance(r, list) else r
            if bad:
                raise InputError(f"preset {p['name']}, variant {v['name']}: \"regress\" must be true, false or a "
                                 f"list of {sorted(have)} (the benchmarks this config has); got {bad!r}")


def build_plan(cfg: dict, out: str = "runs/repro") -> list[Step]:
    """All steps of a budget config, in run order (every step after the steps it depends on)."""
    b = _Builder(cfg, out)
    b.faces_representations()
    b.faces_regression()
    b.faces_matching()
    b.faces_limited()
    b.faces68()
    b.birds()
    b.presets()
    names = [s.name for s in b.steps]
    assert len(set(names)) == len(names), "duplicate step names"
    return b.steps


def select_steps(steps: list[Step], only: list[str] | None) -> list[Step]:
    """The steps whose names match one of the ``only`` patterns (fnmatch; all steps when empty)."""
    from fnmatch import fnmatch

    if not only:
        return list(steps)
    return [s for s in steps if any(fnmatch(s.name, p) for p in only)]
