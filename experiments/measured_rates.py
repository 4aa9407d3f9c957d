"""Rates a plan's finished steps measured, for a budget config's ``rates`` (the GPU plan, issue 18 item 5).

    python experiments/measured_rates.py --run RUN_ROOT --budget CONFIG.json [--device NAME] > rates.json
    python experiments/measured_rates.py --rates rates.json --into experiments/configs/gpu.json

The first form reads the plan's step markers and training logs under ``RUN_ROOT`` and prints JSON: the median
images/s of the MoCo run(s) (``moco_img_s``; batch, precision and architecture as the step's command gives them)
and of the projector (``project_img_s``), matching pairs/s of the matching steps (``match_pairs_s``; both
settings' pairs over the step's whole wall-clock, start-up included), and every finished step's wall-clock. The
second form copies the measured rates into a config's ``rates`` and says where they came from; rates it did
not measure (the DVE, extraction and regressor step rates) keep the config's values and are listed as guesses.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from pathlib import Path

MEASURED = ("moco_img_s", "project_img_s", "match_pairs_s")


def _median_rate(log: Path) -> float | None:
    try:
        rows = [json.loads(ln) for ln in log.read_text().splitlines() if ln.strip()]
    except OSError:
        return None
    rates = [r["img_per_s"] for r in rows[1:] if "img_per_s" in r]  # the first line includes warm-up
    return statistics.median(rates) if rates else None


def measure(run: str, budget: str, data_root: str, device: str) -> dict:
    """The rates the finished steps of ``budget``'s plan under ``run`` measured."""
    from equinv.experiments import markers as M
    from equinv.experiments.config import load_config
    from equinv.experiments.plan import build_plan

    cfg = load_config(budget, data_root)
    steps = build_plan(cfg, run)
    out: dict = {"source": f"measured on {device or 'an unnamed device'} on {datetime.date.today()} by "
                 f"experiments/gpu15.sh ({cfg['budget']} plan; experiments/measured_rates.py)", "step_wall_s": {}}
    moco, proj, match = [], [], []
    for s in steps:
        m = M.read_marker(s)
        if not m or m.get("status") != "ok":
            continue
        out["step_wall_s"][s.name] = round(m.get("total_wall_s") or 0.0, 1)
        rate = _median_rate(Path(s.out) / "log.jsonl")
        if s.name.endswith("_pretrain") and rate:
            moco.append(rate)
        elif "_project_d" in s.name and rate:
            proj.append(rate)
        elif s.name.startswith("faces_match_") and m.get("total_wall_s"):
            match.append(2 * cfg["faces"]["match"]["pairs"] / m["total_wall_s"])
    for key, vals in (("moco_img_s", moco), ("project_img_s", proj), ("match_pairs_s", match)):
        if vals:
            out[key] = round(statistics.median(vals), 1)
    return out


def merge(rates_file: str, config: str) -> None:
    """Copy the measured rates of ``rates_file`` into the ``rates`` of the budget config ``config``."""
    measured = json.loads(Path(rates_file).read_text())
    cfg = json.loads(Path(config).read_text())
    got = [k for k in MEASURED if k in measured]
    if not got:
        sys.exit(f"{rates_file}: no measured rate in it (expected one of {', '.join(MEASURED)})")
    cfg["rates"].update({k: measured[k] for k in got})
    guessed = [k for k in cfg["rates"] if k.endswith("_s") and k not in got]
    cfg["rates"]["source"] = f"{measured['source']}: {', '.join(got)}; still guessed: {', '.join(guessed)}"
    Path(config).write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    print(f"{config}: rates {', '.join(got)} replaced")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="run root of the plan")
    ap.add_argument("--budget", default="experiments/configs/gpu15.json")
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--device", default="", help="the device's name, for the record")
    ap.add_argument("--rates", help="a rates.json this script printed")
    ap.add_argument("--into", help="budget config whose rates the measured ones replace")
    args = ap.parse_args()
    if args.rates and args.into:
        merge(args.rates, args.into)
    elif args.run:
        print(json.dumps(measure(args.run, args.budget, args.data_root, args.device), indent=1))
    else:
        ap.error("give --run RUN_ROOT, or --rates FILE --into CONFIG")


if __name__ == "__main__":
    main()
