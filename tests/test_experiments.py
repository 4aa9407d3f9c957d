"""The experiment harness: plan, resumable runner, results page and claim checks (``equinv.experiments``)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from equinv.errors import InputError
from equinv.experiments import markers as M
from equinv.experiments import paper as P
from equinv.experiments.__main__ import main
from equinv.experiments.config import load_config
from equinv.experiments.plan import Step, build_plan
from equinv.experiments.results import write_results
from equinv.experiments.runner import budget_minutes, expected_minutes, run_plan, step_state

PAPER_TXT = Path(__file__).resolve().parents[2] / "shared" / "docs" / "paper.txt"

SMOKE_STEPS = [
    "faces_pretrain", "faces_dve", "faces_project_d16", "faces_project_d32", "faces_parts_nmf16", "faces_parts_pca",
    "faces_regress_hc", "faces_regress_random", "faces_regress_dve", "faces_regress_hc_std",
    "faces_regress_proj_d16",
    "faces_regress_proj_d32", "faces_regress_nmf16", "faces_regress_layer3", "faces_regress_layer4",
    "faces_match_hc", "faces_match_random", "faces_match_dve", "faces_match_proj_d16", "faces_match_proj_d32",
    "faces_matchfig_hc", "faces_matchfig_proj_d32", "faces_limited_hc", "faces_limited_proj_d16",
    "faces_limited_dve", "faces_limited_random", "faces_limited_random_fanin", "faces_limited_compare",
    "faces68_regress_hc",
    "faces68_regress_random", "faces68_regress_dve", "birds_pretrain", "birds_dve", "birds_regress_hc",
    "birds_regress_random", "birds_regress_dve",
]


def _smoke(tmp_path: Path) -> tuple[dict, list[Step]]:
    cfg = load_config("smoke")
    return cfg, build_plan(cfg, str(tmp_path / "run"))


# -- (a) the plan ---------------------------------------------------------------------------------------------
def test_smoke_dry_run_lists_every_step_and_command(tmp_path, capsys):
    assert main(["reproduce", "--budget", "smoke", "--out", str(tmp_path / "run"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    names = re.findall(r"^\[\w+\]\s+(\S+):", out, flags=re.M)
    assert names == SMOKE_STEPS
    assert not (tmp_path / "run").exists()  # a dry run writes nothing
    cmds = dict(zip(names, re.findall(r"^    (equinv .*)$", out, flags=re.M), strict=True))
    assert cmds["faces_pretrain"].startswith("equinv pretrain --data 'synthetic:32?seed=0&size=64' --arch resnet18")
    assert "--max-minutes '<wall-clock of faces_pretrain>'" in cmds["faces_dve"]
    assert "--method dve --arch smallnet" in cmds["faces_dve"]
    assert "--source projected --projector" in cmds["faces_regress_proj_d16"]
    for name in ("faces_regress_proj_d16", "faces_regress_nmf16", "faces_limited_proj_d16", "faces_regress_hc_std"):
        assert cmds[name].count("--input-scale std") == 1, name
        assert ("--proj-readout linear" in cmds[name]) == ("proj" in name), name
    assert "--input-scale" not in cmds["faces_regress_hc"] + cmds["faces_regress_dve"] + cmds["faces_limited_hc"]
    assert "--source nmf --parts" in cmds["faces_regress_nmf16"] and "parts.safetensors" in cmds["faces_regress_nmf16"]
    assert "--taps conv4" in cmds["faces_regress_layer4"]
    assert "--n-train 2,4 --repeats 2 --tps-aug --tps-copies 2" in cmds["faces_limited_hc"]
    # a probe: its method's command at its own sizes plus one change; the curves leave it out
    assert cmds["faces_limited_random_fanin"] == cmds["faces_limited_random"].replace(
        "--n-train 2,4", "--n-train 2").replace("limited/random", "limited/random_fanin") + \
        " --heatmap-init-std fan-in"
    assert "random_fanin" not in cmds["faces_limited_compare"]
    assert "--source projected" in cmds["faces_match_proj_d32"] and "--pairs 4" in cmds["faces_match_hc"]
    assert "--paper-pck" in cmds["birds_regress_hc"] and "--val" not in cmds["birds_regress_hc"]
    assert cmds["faces_limited_compare"].startswith("equinv report ")
    assert "36 of 36 selected steps to run" in out


@pytest.mark.parametrize("budget", ["cpu", "gpu", "smoke"])
def test_plans_are_ordered_and_val_never_a_test_split(budget):
    cfg = load_config(budget)
    steps = build_plan(cfg, "runs/x")
    seen: set[str] = set()
    for s in steps:
        assert set(s.deps) <= seen, f"{s.name} runs before {set(s.deps) - seen}"
        seen.add(s.name)
        if "--val" in s.argv:
            assert "test" not in s.argv[s.argv.index("--val") + 1].lower()
    if budget == "cpu":
        assert max(s.estimate_min for s in steps) <= 90
        assert 300 < sum(s.estimate_min for s in steps) < 1800


def test_gpu_plan_script_runs_celeba_only_steps_that_fit_its_minutes():
    root = Path(__file__).resolve().parents[1]
    script = (root / "experiments/gpu15.sh").read_text()
    names = re.search(r"^STEPS=(\S+)$", script, flags=re.M).group(1).split(",")
    cfg = load_config(str(root / "experiments/configs/gpu15.json"), "DATA")
    by = {s.name: s for s in build_plan(cfg, "runs/x")}
    assert set(names) <= set(by), set(names) - set(by)
    chosen = [by[n] for n in names]
    # everything it reads travels to the GPU machine: the CelebA faces only (MTFL, 300-W and CUB do not fit)
    specs = [a for s in chosen for a in s.argv if a.startswith(("celeba:", "mtfl:", "facepoint:", "300w:", "cub:"))]
    assert specs and all(a.startswith("celeba:DATA/celeba?") for a in specs)
    pre = by["faces_dense_pretrain"]
    assert {"--preset", "dense", "--precision", "bf16"} <= set(pre.argv) and pre.argv[pre.argv.index("--device") + 1] \
        == "cuda"
    assert "not_mafl&holdout=1000&part=train" in pre.argv[pre.argv.index("--data") + 1]
    test = by["faces_regress_dense_hc"].argv
    assert test[test.index("--test") + 1].endswith("not_mafl&holdout=1000&part=val")  # held out of pretraining
    assert sum(s.estimate_min for s in chosen) <= 10


def test_measured_rates_from_a_run_go_into_a_budget_config(tmp_path, capsys):
    import runpy

    root = Path(__file__).resolve().parents[1]
    mr = runpy.run_path(str(root / "experiments/measured_rates.py"))
    cfg, steps = _smoke(tmp_path)
    by = {s.name: s for s in steps}
    pre, match = by["faces_pretrain"], by["faces_match_hc"]
    Path(pre.out).mkdir(parents=True)
    rows = [{"step": i, "img_per_s": r} for i, r in enumerate((5.0, 100.0, 120.0, 110.0))]  # the first: warm-up
    (Path(pre.out) / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    M.write_marker(pre, {"status": "ok", "total_wall_s": 60.0})
    M.write_marker(match, {"status": "ok", "total_wall_s": 2.0})
    M.write_marker(by["faces_dve"], {"status": "failed", "total_wall_s": 9.0})
    rates = mr["measure"](str(tmp_path / "run"), "smoke", "../shared/data", "GPU X")
    pairs = cfg["faces"]["match"]["pairs"]
    assert rates["moco_img_s"] == 110.0 and rates["match_pairs_s"] == 2 * pairs / 2.0 and "project_img_s" not in rates
    assert rates["step_wall_s"] == {"faces_pretrain": 60.0, "faces_match_hc": 2.0} and "GPU X" in rates["source"]
    (tmp_path / "rates.json").write_text(json.dumps(rates))
    conf = tmp_path / "gpu.json"
    shutil.copyfile(root / "experiments/configs/gpu.json", conf)
    mr["merge"](str(tmp_path / "rates.json"), str(conf))
    new = json.loads(conf.read_text())["rates"]
    assert new["moco_img_s"] == 110.0 and new["match_pairs_s"] == pairs
    assert new["dve_img_s"] == json.loads((root / "experiments/configs/gpu.json").read_text())["rates"]["dve_img_s"]
    assert "still guessed: dve_img_s, project_img_s" in new["source"]


def test_paper_datasets_overlays_load():
    for f in sorted((Path(__file__).resolve().parents[1] / "experiments/configs/paper_datasets").glob("*.json")):
        cfg = load_config("gpu", "/data", str(f))
        steps = build_plan(cfg, "runs/x")
        assert steps and all("{root}" not in a for s in steps for a in s.argv), f.name


# -- the runner ---------------------------------------------------------------------------------------------
def test_runner_records_skips_and_isolates_failures(tmp_path):
    ok = Step("ok", ["data", "kinds"], str(tmp_path / "ok"), [])
    bad = Step("bad", ["data", "check", "nope:/x", "--no-sheet"], str(tmp_path / "bad"), [])
    after_bad = Step("after_bad", ["data", "kinds"], str(tmp_path / "after"), [], deps=["bad"])
    indep = Step("indep", ["data", "kinds"], str(tmp_path / "indep"), [], deps=["ok"])
    steps = [ok, bad, after_bad, indep]
    s1 = run_plan(steps, in_process=True, echo=lambda _: None)
    assert s1.status == {"ok": "ok", "bad": "failed", "after_bad": "blocked", "indep": "ok"} and not s1.ok
    m = M.read_marker(ok)
    assert m["status"] == "ok" and m["exit_code"] == 0 and m["wall_s"] >= 0 and m["command"] == "equinv data kinds"
    assert M.read_marker(bad)["exit_code"] == 2 and "unknown dataset kind" in (tmp_path / "bad/step.log").read_text()
    s2 = run_plan(steps, in_process=True, echo=lambda _: None)
    assert s2.status["ok"] == "done" and s2.status["indep"] == "done" and s2.status["bad"] == "failed"
    assert len(M.read_marker(ok)["attempts"]) == 1


def test_resume_and_budget_rules(tmp_path):
    a = Step("a", ["pretrain"], str(tmp_path / "a"), ["backbone.safetensors"], resume_argv=["pretrain", "--resume"],
             minutes=5.0)
    b = Step("b", ["x", "--max-minutes", "{minutes}"], str(tmp_path / "b"), ["w"], deps=["a"], minutes=3.0,
             minutes_from="a", estimate_min=40.0)
    by = {"a": a, "b": b}
    assert step_state(a, by)[0] == "run" and budget_minutes(b, by) is None
    assert expected_minutes(b, by) == 40.0  # a has not run: the plan's throughput estimate
    (tmp_path / "a/checkpoints").mkdir(parents=True)
    (tmp_path / "a/checkpoints/last.safetensors").write_bytes(b"x")
    assert step_state(a, by)[0] == "resume"
    # an interrupted run whose command changed since is not resumed with the new one: it starts afresh
    M.write_marker(a, {"status": "running", "argv": ["pretrain", "--epochs", "42"]})
    assert step_state(a, by) == ("stale", "interrupted, and its command changed since: starts afresh")
    M.write_marker(a, {"status": "running", "argv": ["pretrain"]})
    assert step_state(a, by)[0] == "resume"
    (tmp_path / "a/backbone.safetensors").write_bytes(b"w1")
    M.write_marker(a, {"status": "ok", "end": 1.0, "total_wall_s": 61.0, "digests": M.output_digests(a)})
    assert step_state(a, by)[0] == "done"
    assert budget_minutes(b, by) == pytest.approx(1.1)  # a's wall-clock, rounded up to 0.1 min, under b's cap
    assert expected_minutes(b, by) == pytest.approx(1.1)  # b runs for the budget it now knows
    (tmp_path / "b").mkdir()
    (tmp_path / "b/w").write_text("1")
    M.write_marker(b, {"status": "ok", "end": 2.0, "dep_digests": {"a": M.output_digests(a)}})
    assert step_state(b, by)[0] == "done"
    (tmp_path / "a/backbone.safetensors").write_bytes(b"w2")  # a retrained: b is stale
    M.write_marker(a, {"status": "ok", "end": 3.0, "total_wall_s": 61.0, "digests": M.output_digests(a)})
    assert step_state(b, by)[0] == "stale"
    # a changed command makes a step stale too (the marker keeps the argv template it ran)
    M.write_marker(a, {"status": "ok", "end": 3.0, "total_wall_s": 61.0, "digests": M.output_digests(a),
                       "argv": ["pretrain"]})
    assert step_state(a, by)[0] == "done"
    a.argv = ["pretrain", "--epochs", "2"]
    assert step_state(a, by) == ("stale", "its command changed since it ran")
    tries = [{"resumed": False, "wall_s": 5.0}, {"resumed": True, "wall_s": 1.0}, {"resumed": False, "wall_s": 2.0},
             {"resumed": True, "wall_s": 3.0}]
    assert M.current_attempts({"attempts": tries}) == tries[2:]  # a fresh start supersedes what came before
    assert M.spent_seconds({"attempts": tries}, a) == 5.0



def test_training_step_started_without_checkpoint_starts_afresh(tmp_path):
    """Training refuses a directory that holds a run: a step killed before its first checkpoint is moved aside."""
    a = Step("a", ["data", "kinds"], str(tmp_path / "a"), ["out.txt"], resume_argv=["pretrain", "--resume"])
    (tmp_path / "a").mkdir()
    (tmp_path / "a/config.json").write_text("{}")
    M.write_marker(a, {"status": "running", "argv": ["data", "kinds"]})
    assert step_state(a, {"a": a}) == ("stale", "started but never checkpointed: starts afresh")
    run_plan([a], in_process=True, echo=lambda _: None)
    assert not (tmp_path / "a/config.json").exists() and list(tmp_path.glob("a.stale-*/config.json"))

# -- (c) results page and claims on fake outputs ---------------------------------------------------------------
def _fake_regression(step: Step, values: dict[str, float], pck: float | None = None,
                     mean_shape: dict[str, float] | None = None) -> None:
    specs = [step.argv[i + 1] for i, a in enumerate(step.argv) if a == "--test"]
    tests = {spec: {"iod_error_percent": values.get(role), "iod_error_percent_std": None, "pck": pck}
             for spec, role in zip(specs, step.meta["tests"], strict=True)}
    if mean_shape is not None:  # the no-feature reference, as runs record it since it was added
        for spec, role in zip(specs, step.meta["tests"], strict=True):
            tests[spec].update(mean_shape_iod_error_percent=mean_shape.get(role), mean_shape_pck=mean_shape["pck"])
    rec = {"datasets": {"test": specs}, "runs": [{"n_train": 32, "all_annotations": True, "tests": tests,
                                                   "per_repeat": [{"selected_epoch": 7}]}]}
    Path(step.out).mkdir(parents=True, exist_ok=True)
    (Path(step.out) / "regression.json").write_text(json.dumps(rec))


def _fake_match(step: Step, same: float, diff: float) -> None:
    Path(step.out).mkdir(parents=True, exist_ok=True)
    (Path(step.out) / "match.json").write_text(json.dumps({"match_error_same": same, "match_error_diff": diff}))


def test_results_claims_on_fake_outputs(tmp_path):
    cfg, steps = _smoke(tmp_path)
    by = {s.name: s for s in steps}
    _fake_regression(by["faces_regress_hc"], {"test": 3.0, "val": 2.9})
    _fake_regression(by["faces_regress_random"], {"test": 5.0, "val": 5.1},
                     mean_shape={"test": 17.7, "val": 17.8, "pck": 30.0})
    _fake_regression(by["faces_regress_dve"], {"test": 2.5, "val": 2.4})
    _fake_regression(by["faces_regress_layer3"], {"test": 4.0, "val": 3.5})
    _fake_regression(by["faces_regress_layer4"], {"test": 3.2, "val": 3.3})
    _fake_match(by["faces_match_hc"], 0.7, 6.0)
    _fake_match(by["faces_match_dve"], 1.3, 3.0)
    _fake_match(by["faces_match_proj_d32"], 0.8, 2.0)
    _fake_regression(by["birds_regress_hc"], {}, pck=60.0)
    _fake_regression(by["birds_regress_dve"], {}, pck=61.0, mean_shape={"pck": 40.0})
    findings = tmp_path / "findings.md"
    findings.write_text("Hand-written finding: *verbatim*.\n")
    page = write_results(cfg, steps, tmp_path / "results.md", findings=findings).read_text()
    claims = {m.group(1): m.group(2) for m in re.finditer(r"^- \*\*(.+?)\*\*: (.+)$", page, flags=re.M)}
    assert claims["Contrastive hypercolumns beat a random-init network on 5-point faces (test)"].startswith(
        "holds (ours 3.00 vs random 5.00)")
    assert claims["Contrastive hypercolumns beat DVE on 5-point faces (test)"].startswith(
        "does not hold (ours 3.00 vs DVE 2.50)")
    assert claims["Layer #4 (conv4_x) is the best single layer (validation split)"].startswith(
        "holds (best on val: #4; #3 3.50, #4 3.30)")
    assert claims["The hypercolumn beats the best single layer (test; layer chosen on val)"].startswith(
        "holds (hypercolumn 3.00 vs layer #4 3.20)")
    assert claims["Raw hypercolumns match poorly across identities: DVE beats them on different-identity "
                  "matching"].startswith("holds (DVE 3.00 vs hypercolumn 6.00)")
    assert claims["Projected features (32-D) beat DVE on different-identity matching"].startswith("holds")
    assert claims["Contrastive hypercolumns beat DVE on birds (PCK)"].startswith("does not hold (ours 60.00 vs DVE "
                                                                                 "61.00)")
    assert claims["Feature projection beats NMF at the same dimension (16-D, test)"].startswith(
        "not run (missing `faces_regress_proj_d16.test`")
    assert "| ours, resnet18 hypercolumn | 2.90 | 3.00 | 7 |" in page
    assert "Hand-written finding: *verbatim*." in page
    # the no-feature reference: from the first step of a table that records it; tables without one have no row
    ref = "| mean training shape (no features; reference) |"
    assert f"{ref} 17.80 | 17.70 | – | from [`faces_regress_random`]" in page
    assert f"{ref} 40.00 | – | from [`birds_regress_dve`]" in page
    assert page.count(ref) == 2
    for title in ("## Claims", "## 1. Landmark regression", "## 2. Single layers", "## 3. Landmark matching",
                  "## 4. Limited annotations", "## 5. 68 landmarks", "## 6. Birds", "## Commands and wall-clock"):
        assert title in page


def _with_preset(cfg: dict) -> dict:
    pre = dict(cfg["faces"]["pretrain"], extra=[*cfg["faces"]["pretrain"]["extra"], "--head", "mlp"])
    variant = {"name": "dve", "label": "DVE loss", "extra": ["--mode", "dve"]}
    return {**cfg, "presets": [{"name": "small", "label": "small-data preset", "pretrain": pre,
                                "project": dict(cfg["faces"]["project"], dims=[32], variants=[variant])}]}


def test_preset_steps_reuse_the_paper_commands_beside_the_paper_rows(tmp_path):
    cfg = _with_preset(load_config("smoke"))
    steps = build_plan(cfg, str(tmp_path / "run"))
    by = {s.name: s for s in steps}
    # the paper recipe's steps are unchanged (same commands, so their archived runs stay done)
    base = {s.name: s.argv for s in build_plan(load_config("smoke"), str(tmp_path / "run"))}
    assert all(by[n].argv == argv for n, argv in base.items())
    new = [s.name for s in steps if s.name not in base]
    assert new == ["faces_small_pretrain", "faces_regress_small_hc", "faces68_regress_small_hc",
                   "faces_match_small_hc", "faces_small_project_d32", "faces_match_small_proj_d32",
                   "faces_small_project_dve_d32", "faces_match_small_proj_dve_d32"]
    pre = by["faces_small_pretrain"]
    assert pre.out == str(tmp_path / "run/faces_small/pretrain") and pre.argv[-2:] == ["--head", "mlp"]
    assert pre.resume_argv[:3] == ["pretrain", "--resume", pre.out]
    # scored with the same commands as the paper recipe's hypercolumn, on the preset's backbone
    for ours, paper in (("faces_regress_small_hc", "faces_regress_hc"), ("faces68_regress_small_hc",
                                                                          "faces68_regress_hc"),
                        ("faces_match_small_hc", "faces_match_hc")):
        swap = [pre.out if a == by["faces_pretrain"].out else a.replace("/hc", "/small_hc") for a in by[paper].argv]
        assert by[ours].argv == swap and by[ours].deps == ["faces_small_pretrain"], ours
    proj = by["faces_small_project_d32"]
    assert proj.argv[proj.argv.index("--backbone") + 1] == pre.out and proj.deps == ["faces_small_pretrain"]
    assert by["faces_match_small_proj_d32"].deps == ["faces_small_pretrain", "faces_small_project_d32"]
    # a projector variant: the same command plus its flags, in its own directory, matched like the others
    dve = by["faces_small_project_dve_d32"]
    assert dve.argv == [a.replace("project_d32", "project_dve_d32") for a in proj.argv] + ["--mode", "dve"]
    assert dve.label == "projector 32-D (DVE loss), small-data preset"
    vm = by["faces_match_small_proj_dve_d32"]
    assert vm.argv[vm.argv.index("--projector") + 1] == dve.out and vm.deps == ["faces_small_pretrain", dve.name]

    _fake_regression(by["faces_regress_small_hc"], {"test": 4.0, "val": 3.9})
    _fake_regression(by["faces_regress_random"], {"test": 5.0, "val": 5.1})
    _fake_regression(by["faces_regress_dve"], {"test": 3.5, "val": 3.4})
    _fake_regression(by["faces68_regress_small_hc"], {"test": 9.0, "val": 8.0})
    _fake_regression(by["faces68_regress_random"], {"test": 10.0, "val": 9.0})
    _fake_match(by["faces_match_small_hc"], 0.7, 7.0)
    _fake_match(by["faces_match_random"], 0.9, 6.0)
    _fake_match(by["faces_match_dve"], 0.8, 3.0)
    _fake_match(by["faces_match_small_proj_d32"], 0.8, 2.5)
    _fake_match(by["faces_match_small_proj_dve_d32"], 0.6, 3.5)
    page = write_results(cfg, steps, tmp_path / "results.md").read_text()
    claims = {m.group(1): m.group(2) for m in re.finditer(r"^- \*\*(.+?)\*\*: (.+)$", page, flags=re.M)}
    P_ = "small-data preset: "
    assert claims[P_ + "the contrastive hypercolumn beats a random-init network on 5-point faces (test)"].startswith(
        "holds (small 4.00 vs random 5.00)")
    assert claims[P_ + "the contrastive hypercolumn beats DVE trained for the paper recipe's wall-clock on 5-point "
                  "faces (test)"].startswith("does not hold (small 4.00 vs DVE 3.50)")
    assert claims[P_ + "the contrastive hypercolumn beats random init on 300-W (test)"].startswith("holds")
    assert claims[P_ + "the contrastive hypercolumn beats random init on different-identity matching"].startswith(
        "does not hold (small 7.00 vs random 6.00)")
    assert claims[P_ + "projected features (32-D) beat DVE on different-identity matching"].startswith(
        "holds (small projected 2.50 vs DVE 3.00)")
    assert claims[P_ + "projected features (32-D, DVE loss) beat DVE on different-identity matching"].startswith(
        "does not hold (small projected (dve) 3.50 vs DVE 3.00)")
    # the rows sit in the paper recipe's tables
    assert "| ours, resnet18 hypercolumn, small-data preset | 3.90 | 4.00 | 7 |" in page
    assert "| ours + projector 32-D, small-data preset | 0.80 | 2.50 |" in page
    assert "| ours + projector 32-D (DVE loss), small-data preset | 0.60 | 3.50 |" in page
    assert "| ours, resnet18 hypercolumn, small-data preset | 8.00 | 9.00 |" in page


def test_projector_variant_starts_from_another_with_its_own_epochs(tmp_path):
    cfg = _with_preset(load_config("smoke"))
    tune = {"name": "tune", "label": "trunk fine-tuned", "init": "dve", "epochs": 7,
            "extra": ["--mode", "dve", "--trunk-lr", "1e-4"]}
    plain = {"name": "plain_tune", "label": "from the plain one", "init": "", "extra": ["--trunk-lr", "1e-4"]}
    cfg["presets"][0]["project"]["variants"] += [tune, plain]
    by = {s.name: s for s in build_plan(cfg, str(tmp_path / "run"))}
    dve, step = by["faces_small_project_dve_d32"], by["faces_small_project_tune_d32"]
    assert step.argv[-2:] == ["--init", dve.out] and step.deps == ["faces_small_pretrain", dve.name]
    assert step.argv[step.argv.index("--epochs") + 1] == "7" and dve.argv[dve.argv.index("--epochs") + 1] != "7"
    other = by["faces_small_project_plain_tune_d32"]
    assert other.argv[-2:] == ["--init", by["faces_small_project_d32"].out]
    assert other.deps == ["faces_small_pretrain", "faces_small_project_d32"]
    assert by["faces_match_small_proj_tune_d32"].deps == ["faces_small_pretrain", step.name]
    assert "faces_regress_small_plain_tune_d32_hc" not in by  # only a variant that asks is regressed
    cap = dve.argv[dve.argv.index("--max-images") + 1]
    assert step.argv[step.argv.index("--max-images") + 1] == cap  # the preset's cap unless the variant sets one
    cfg["presets"][0]["project"]["variants"][1]["max_images"] = None
    cfg["presets"][0]["project"]["variants"][2]["max_images"] = 5
    by = {s.name: s for s in build_plan(cfg, str(tmp_path / "run"))}
    assert "--max-images" not in by["faces_small_project_tune_d32"].argv  # null: every image
    other = by["faces_small_project_plain_tune_d32"]
    assert other.argv[other.argv.index("--max-images") + 1] == "5"
    cfg["presets"][0]["project"]["variants"][1]["regress"] = True
    by = {s.name: s for s in build_plan(cfg, str(tmp_path / "run"))}
    reg = by["faces_regress_small_tune_d32_hc"]
    assert reg.argv[reg.argv.index("--backbone") + 1] == step.out and reg.deps == ["faces_small_pretrain", step.name]
    assert reg.argv[reg.argv.index("--train") + 1] == by["faces_regress_small_hc"].argv[
        by["faces_regress_small_hc"].argv.index("--train") + 1]
    # its claims: the tuned trunk's hypercolumn against random init and same-wall-clock DVE on 5-point faces
    from equinv.experiments.claims import preset_claims

    tuned = [c for c in preset_claims({f"{reg.name}.test": 2.0, "faces_regress_dve.test": 2.5}, cfg)
             if "hypercolumn of the trunk" in c.text]
    assert [(c.verdict, c.detail) for c in tuned] == [("not run", "missing `faces_regress_random.test`"),
                                                      ("holds", "small tuned trunk (tune) 2.00 vs DVE 2.50")]


def test_tuned_trunk_is_scored_on_the_benchmarks_its_variant_names(tmp_path):
    cfg = _with_preset(load_config("smoke"))
    tune = {"name": "tune", "label": "trunk fine-tuned", "init": "dve", "regress": ["face5", "face68"],
            "match_hc": True, "extra": ["--trunk-lr", "1e-4"]}
    cfg["presets"].append({"name": "rand", "label": "no MoCo", "pretrain": None,
                           "project": dict(cfg["presets"][0]["project"], variants=[
                               cfg["presets"][0]["project"]["variants"][0], tune])})
    by = {s.name: s for s in build_plan(cfg, str(tmp_path / "run"))}
    tuned = by["faces_rand_project_tune_d32"]
    five, w300, m = (by[f"{e}_rand_tune_d32_hc"] for e in ("faces_regress", "faces68_regress", "faces_match"))
    for s in (five, w300, m):  # the tuned trunk is each one's backbone, scored by the paper recipe's commands
        assert s.argv[s.argv.index("--backbone") + 1] == tuned.out and s.deps == [tuned.name]
        assert s.label == "random-init resnet18 hypercolumn, no MoCo, trunk after the projector 32-D (trunk " \
                          "fine-tuned)"
    for s, ref in ((w300, "faces68_regress_random"), (m, "faces_match_random")):
        assert s.argv == [tuned.out if a == "random" else a.replace("random", "rand_tune_d32_hc")
                          for a in by[ref].argv]
    from equinv.experiments.claims import preset_claims

    nums = {f"{five.name}.test": 3.0, "faces_regress_random.test": 4.0, "faces_regress_dve.test": 2.0,
            f"{w300.name}.test": 6.0, "faces68_regress_random.test": 7.0, f"{m.name}.diff": 5.0,
            "faces_match_random.diff": 4.0}
    got = [(c.text.split("the hypercolumn of the trunk fine-tuned with the projector (32-D, trunk fine-tuned) ")[1],
            c.verdict, c.detail) for c in preset_claims(nums, cfg) if "(32-D, trunk fine-tuned) beats" in c.text]
    who = "rand tuned trunk (tune)"
    assert got == [("beats a random-init network on 5-point faces (test)", "holds", f"{who} 3.00 vs random 4.00"),
                   ("beats DVE trained for the paper recipe's wall-clock on 5-point faces (test)", "does not hold",
                    f"{who} 3.00 vs DVE 2.00"),
                   ("beats random init on 300-W (test)", "holds", f"{who} 6.00 vs random 7.00"),
                   ("beats random init on different-identity matching", "does not hold", f"{who} 5.00 vs random 4.00")]
    # "regress": true is 5-point faces only; an unknown benchmark is refused when the plan is built
    tune.update(regress=True, match_hc=False)
    names = {s.name for s in build_plan(cfg, str(tmp_path / "run"))}
    assert five.name in names and w300.name not in names and m.name not in names
    tune["regress"] = ["face5", "birds"]
    with pytest.raises(InputError, match=r"preset rand, variant tune: \"regress\" must be true, false or a list of "
                       r"\['face5', 'face68'\] .*got \['birds'\]"):
        build_plan(cfg, str(tmp_path / "run"))


def test_preset_without_pretraining_trains_projectors_on_the_random_network(tmp_path):
    cfg = _with_preset(load_config("smoke"))
    tune = {"name": "tune", "label": "trunk fine-tuned", "init": "dve", "epochs": 7, "regress": True,
            "extra": ["--mode", "dve", "--trunk-lr", "1e-4"]}
    cfg["presets"][0]["project"]["variants"].append(tune)
    base = {"name": "rand", "label": "no MoCo", "pretrain": None, "baseline_for": ["small"],
            "project": cfg["presets"][0]["project"]}
    cfg["presets"].append(base)
    before = {s.name for s in build_plan({**cfg, "presets": cfg["presets"][:1]}, str(tmp_path / "run"))}
    steps = build_plan(cfg, str(tmp_path / "run"))
    by = {s.name: s for s in steps}
    new = [s.name for s in steps if s.name not in before]
    # no MoCo step and no hypercolumn rows of its own (the random network's rows exist already)
    assert new == ["faces_rand_project_d32", "faces_match_rand_proj_d32", "faces_rand_project_dve_d32",
                   "faces_match_rand_proj_dve_d32", "faces_rand_project_tune_d32", "faces_match_rand_proj_tune_d32",
                   "faces_regress_rand_tune_d32_hc"]
    proj, tuned = by["faces_rand_project_dve_d32"], by["faces_rand_project_tune_d32"]
    assert proj.argv[proj.argv.index("--backbone") + 1] == "random" and proj.deps == []
    assert tuned.deps == [proj.name] and tuned.argv[-2:] == ["--init", proj.out]
    # scored like the MoCo preset's steps: the same commands with the random backbone
    small = by["faces_small_project_dve_d32"]
    pre = by["faces_small_pretrain"].out
    assert proj.argv == ["random" if a == pre else a.replace("faces_small", "faces_rand") for a in small.argv]
    m = by["faces_match_rand_proj_tune_d32"]
    assert m.argv[m.argv.index("--backbone") + 1] == "random" and m.deps == [tuned.name]
    assert m.label == "random-init resnet18 + projector 32-D (trunk fine-tuned), no MoCo"
    reg = by["faces_regress_rand_tune_d32_hc"]
    assert reg.argv[reg.argv.index("--backbone") + 1] == tuned.out and reg.deps == [tuned.name]

    from equinv.experiments.claims import preset_claims

    nums = {"faces_match_dve.diff": 3.0, "faces_match_small_proj_dve_d32.diff": 4.0,
            "faces_match_rand_proj_dve_d32.diff": 5.0, "faces_match_small_proj_tune_d32.diff": 3.5,
            "faces_match_rand_proj_tune_d32.diff": 2.5}
    claims = {c.text: (c.verdict, c.detail) for c in preset_claims(nums, cfg) if c.text.startswith(("no MoCo",
                                                                                                   "small's MoCo"))}
    assert not [t for t in claims if "contrastive hypercolumn" in t]
    assert claims["no MoCo: projected features (32-D, trunk fine-tuned) beat DVE on different-identity matching"] == (
        "holds", "rand projected (tune) 2.50 vs DVE 3.00")
    helps = {t: v for t, v in claims.items() if t.startswith("small's MoCo")}
    assert "small's MoCo pretraining pays: its projection (32-D, DVE loss) matches across identities better than " \
           "rand's (DVE loss; no MoCo)" in helps
    assert sorted(helps.values()) == [("does not hold", "small (tune) 3.50 vs rand (tune) 2.50"),
                                      ("holds", "small (dve) 4.00 vs rand (dve) 5.00")]
    # its rows: the paper's projector on the frozen random network is the paper's random + proj row; the tuned
    # trunk's hypercolumn has no paper row
    _fake_match(by["faces_match_rand_proj_d32"], 1.5, 6.5)
    _fake_regression(reg, {"test": 2.0, "val": 2.1})
    page = write_results(cfg, steps, tmp_path / "results.md").read_text()
    assert "| random-init resnet18 + projector 32-D, no MoCo | 1.50 | 6.50 |" in page
    assert "| random-init resnet18 hypercolumn, no MoCo, trunk after the projector 32-D (trunk fine-tuned) | 2.10 | " \
           "2.00 | 7 | [`faces_regress_rand_tune_d32_hc`](#cmd-faces_regress_rand_tune_d32_hc) | – | – | – |" in page
    from equinv.experiments import paper

    assert paper.matching_key("random_proj_d256", "resnet18", dim=256) == "random_r50_proj256"
    assert paper.matching_key("random_proj_dve_d256", "resnet18", dim=256) is None
    base["baseline_for"] = ["smal"]
    with pytest.raises(InputError, match=r"names \['smal'\], not MoCo presets of this config \(small\)"):
        build_plan(cfg, str(tmp_path / "run"))
    # explicit pairs: another variant of the MoCo preset against one of the baseline's
    base["baseline_for"] = [{"preset": "small", "pairs": {"dve": "tune"}}]
    claims = [(c.text, c.detail) for c in preset_claims(nums, cfg) if c.text.startswith("small's MoCo")]
    assert claims == [("small's MoCo pretraining pays: its projection (32-D, DVE loss) matches across identities "
                       "better than rand's (trunk fine-tuned; no MoCo)", "small (dve) 4.00 vs rand (tune) 2.50")]
    base["baseline_for"] = [{"preset": "small", "pairs": {"dve": "tuned"}}]
    with pytest.raises(InputError, match="pairs small's variant 'dve' with 'tuned'; small has"):
        build_plan(cfg, str(tmp_path / "run"))
    base["baseline_for"], cfg["presets"][0]["baseline_for"] = ["small"], ["rand"]
    with pytest.raises(InputError, match="preset small: \"baseline_for\" is for a preset without pretraining"):
        build_plan(cfg, str(tmp_path / "run"))


def test_paper_numbers_match_paper_text():
    if not PAPER_TXT.is_file():
        pytest.skip(f"{PAPER_TXT} not found")
    lines = PAPER_TXT.read_text().splitlines()
    groups = [P.REGRESSION, P.TABLE3, P.MATCHING, P.LIMITED, P.CUB]
    for group in groups:
        for key, row in group.items():
            text = " ".join(lines[row.line - 1:(row.last_line or row.line)])
            for col, v in row.values.items():
                if v is not None:
                    assert f"{v:.2f}" in text, f"{key} {col}: {v} not on paper.txt l.{row.line}"
            for col, s in row.std.items():
                assert f"{row.values[col]:.2f} ±{s:.2f}" in text, f"{key} {col} std"


# -- (b) the whole smoke plan, end to end ------------------------------------------------------------------------
def _fmt(v: float) -> str:
    return f"{v:.2f}"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.timeout(1500)  # ~4 min on 2 idle cores; generous for a shared machine
def test_smoke_plan_end_to_end_resumes_and_skips(tmp_path, monkeypatch, capsys):
    run, results = tmp_path / "run", tmp_path / "results.md"
    args = ["reproduce", "--budget", "smoke", "--out", str(run), "--results", str(results)]
    steps = build_plan(load_config("smoke"), str(run))
    by = {s.name: s for s in steps}
    pre = by["faces_pretrain"]

    # 1. MoCo killed (SIGKILL) after its first step, which left a checkpoint: recorded as failed
    monkeypatch.setenv("EQUINV_TEST_KILL_AT_STEP", "1")
    assert main([*args, "--only", "faces_pretrain"]) == 1
    monkeypatch.delenv("EQUINV_TEST_KILL_AT_STEP")
    m = M.read_marker(pre)
    assert m["status"] == "failed" and m["exit_code"] != 0 and (run / "faces/pretrain/checkpoints").is_dir()
    assert not (run / "faces/pretrain/backbone.safetensors").exists()

    # 2. the whole plan: MoCo resumes from its checkpoint, everything else runs
    assert main([*args, "--in-process"]) == 0
    m = M.read_marker(pre)
    assert m["status"] == "ok" and [a["resumed"] for a in m["attempts"]] == [False, True]
    assert m["attempts"][1]["argv"][:3] == ["pretrain", "--resume", str(run / "faces/pretrain")]
    for s in steps:
        assert M.read_marker(s)["status"] == "ok", s.name
    page = results.read_text()
    for title in ("## Claims", "## 1. Landmark regression", "## 2. Single layers", "## 3. Landmark matching",
                  "## 4. Limited annotations", "## 5. 68 landmarks", "## 6. Birds", "## Figures",
                  "## Commands and wall-clock"):
        assert title in page
    assert "0 not run yet" in page and "Steps: 36 of 36 done" in page
    reg = json.loads((run / "faces/regress/hc/regression.json").read_text())
    test_spec, val_spec = reg["datasets"]["test"]
    hc_row = next(ln for ln in page.splitlines() if ln.startswith("| ours, resnet18 hypercolumn | "))
    assert _fmt(reg["runs"][0]["tests"][val_spec]["iod_error_percent"]) in hc_row
    assert _fmt(reg["runs"][0]["tests"][test_spec]["iod_error_percent"]) in hc_row
    mt = json.loads((run / "faces/match/proj_d32/match.json").read_text())
    assert f"| {_fmt(mt['match_error_same'])} | {_fmt(mt['match_error_diff'])} |" in page
    lim = json.loads((run / "faces/limited/dve/regression.json").read_text())
    t = lim["runs"][1]["tests"][lim["datasets"]["test"][0]]
    assert f"{_fmt(t['iod_error_percent'])} ± {_fmt(t['iod_error_percent_std'])}" in page
    probe = json.loads((run / "faces/limited/random_fanin/regression.json").read_text())
    assert 0 < probe["heatmap_init_std"] < 1
    t = probe["runs"][0]["tests"][probe["datasets"]["test"][0]]
    probe_row = next(ln for ln in page.splitlines() if ln.startswith("| random-init resnet18 hypercolumn, fan-in"))
    assert probe_row.startswith(f"| random-init resnet18 hypercolumn, fan-in heat-map init (probe) | "
                                f"{_fmt(t['iod_error_percent'])} ± {_fmt(t['iod_error_percent_std'])} | – |")
    birds = json.loads((run / "birds/regress/hc/regression.json").read_text())
    assert f"| {_fmt(birds['pck'])} | {_fmt(birds['paper_pck'])} |" in page
    figs = list((tmp_path / "results_figures").glob("*.png"))
    assert any("compare_curve" in f.name for f in figs) and any("matches" in f.name for f in figs)

    # 3. a second invocation skips every step
    capsys.readouterr()
    assert main([*args, "--in-process"]) == 0
    assert "0 ran, 36 already done" in capsys.readouterr().out

    # 4. an interrupted step is redone, a pretraining without its weights resumed; the rest is left alone
    (run / "faces/regress/random/regression.json").unlink()
    (run / "faces/pretrain/backbone.safetensors").unlink()
    shutil.rmtree(run / "faces/match/hc")
    assert main([*args, "--in-process"]) == 0
    assert "3 ran, 33 already done" in capsys.readouterr().out
    assert [a["resumed"] for a in M.read_marker(pre)["attempts"]] == [False, True, True]
    assert len(M.read_marker(by["faces_regress_hc"])["attempts"]) == 1  # the resumed weights are the same
    assert len(M.read_marker(by["faces_regress_random"])["attempts"]) == 2


# -- (e) the archive: finished steps kept in the repository and restored on another machine --------------------
def test_archive_keeps_finished_steps_and_restores_them_byte_identical(tmp_path, monkeypatch):
    from equinv.experiments import archive as A

    run, arch = tmp_path / "run", tmp_path / "archive"
    a = Step("a", ["pretrain", "--out", str(run / "a")], str(run / "a"), ["backbone.safetensors"],
             resume_argv=["pretrain", "--resume"])
    b = Step("faces_regress_hc", ["eval", "x"], str(run / "b"), ["regression.json"], deps=["a"])
    c = Step("c", ["eval", "y"], str(run / "c"), ["regression.json"])  # failed: never archived
    by = {s.name: s for s in (a, b, c)}
    (run / "a/checkpoints").mkdir(parents=True)
    (run / "a/checkpoints/last.safetensors").write_bytes(b"optimizer state")
    (run / "a/tb").mkdir()
    (run / "a/tb/events").write_bytes(b"tb")
    weights = b"w" * 40  # over MAX_BYTES: generated again, not archived
    (run / "a/backbone.safetensors").write_bytes(weights)
    (run / "a/log.jsonl").write_text('{"epoch": 1}\n')
    (run / "a/huge.png").write_bytes(b"x" * 64)
    (run / "a/parts.json").write_text("{}")
    monkeypatch.setattr(A, "MAX_BYTES", 32)
    M.write_marker(a, {"status": "ok", "end": 1.0, "argv": a.argv, "digests": M.output_digests(a)})
    (run / "b").mkdir()
    (run / "b/regression.json").write_text('{"runs": []}')
    (run / "b/report_landmarks_0_0.png").write_bytes(b"png")  # shown on the results page: kept
    (run / "b/report_landmarks_1_0.png").write_bytes(b"png")  # not shown: made again by rerunning the step
    M.write_marker(b, {"status": "ok", "end": 2.0, "argv": b.argv, "digests": M.output_digests(b),
                       "dep_digests": {"a": M.output_digests(a)}})
    (run / "c").mkdir()
    M.write_marker(c, {"status": "failed", "argv": c.argv})

    assert A.archive_all([a, b, c], run, arch) == ["a", "faces_regress_hc"]
    assert sorted(p.relative_to(arch).as_posix() for p in arch.rglob("*") if p.is_file()) == [
        "a/log.jsonl", "a/parts.json", "a/step.json", "b/regression.json", "b/report_landmarks_0_0.png",
        "b/step.json"]  # no resume checkpoint, no TensorBoard, nothing over MAX_BYTES, only the page's figures
    assert A.archive_all([a, b, c], run, arch) == []  # unchanged steps are not copied again
    # an archive made when every figure was kept loses the ones the page does not show, nothing else
    shutil.copyfile(run / "b/report_landmarks_1_0.png", arch / "b/report_landmarks_1_0.png")
    assert A.prune([a, b, c], run, arch) == [str(arch / "b/report_landmarks_1_0.png")]
    assert A.prune([a, b, c], run, arch) == [] and (arch / "b/report_landmarks_0_0.png").is_file()

    shutil.rmtree(run)  # another machine: an empty run root
    assert step_state(b, by)[0] == "run"
    assert A.restore([a, b, c], run, arch) == ["a", "faces_regress_hc"]
    assert step_state(a, by) == ("run", "outputs missing")  # the weights are made again ...
    assert step_state(b, by)[0] == "done"  # ... and what was made from them stays done
    assert (run / "a/parts.json").is_file() and not (run / "a/backbone.safetensors").exists()
    (run / "a/backbone.safetensors").write_bytes(weights)  # a seeded rerun: the same weights
    assert step_state(a, by)[0] == "done"
    assert A.restore([a, b, c], run, arch) == []  # already there

    shutil.rmtree(run / "a")
    M.write_marker(a, {"status": "running", "argv": a.argv, "attempts": [{"resumed": False}]})
    assert A.restore([a], run, arch) == []  # a local attempt of a step without archived weights is kept
    assert M.read_marker(a)["status"] == "running"

    shutil.rmtree(run)
    other = Step("a", ["pretrain", "--epochs", "9", "--out", str(run / "a")], str(run / "a"),
                 ["backbone.safetensors"])
    assert A.restore([other], run, arch) == []  # archived with another command: ignored
    assert not (run / "a").exists()


def test_reproduce_archives_steps_and_results_rebuild_the_page_from_the_archive(tmp_path, capsys):
    run, arch, page = tmp_path / "run", tmp_path / "archive", tmp_path / "results.md"
    args = ["--budget", "smoke", "--out", str(run), "--results", str(page), "--archive", str(arch)]
    assert main(["reproduce", *args, "--only", "faces_regress_random", "--in-process"]) == 0
    assert (arch / "faces/regress/random/regression.json").is_file()
    row = next(ln for ln in page.read_text().splitlines() if ln.startswith("| random-init resnet18 hypercolumn | "))
    shutil.rmtree(run)
    page.unlink()
    capsys.readouterr()
    assert main(["results", *args]) == 0
    assert "restored 1 finished steps" in capsys.readouterr().out
    assert row in page.read_text().splitlines()
    assert main(["reproduce", *args, "--only", "faces_regress_random", "--in-process"]) == 0
    assert "0 ran, 1 already done" in capsys.readouterr().out


def test_reference_row_comes_from_the_most_complete_record():
    from equinv.experiments.tables import DASH, _reference

    steps = [Step(n, [], f"/x/{n}", []) for n in ("none", "part", "full", "full_too")]
    cells = {"none": [DASH, DASH], "part": ["1.00", DASH], "full": ["1.00", "2.00"], "full_too": ["1.00", "2.00"]}
    row, link = _reference(steps, cells.__getitem__)
    assert row == ["1.00", "2.00"] and "`full`" in link
    assert _reference(steps[:1], cells.__getitem__) is None
