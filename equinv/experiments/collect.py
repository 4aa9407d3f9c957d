"""Read every step's record (``regression.json`` / ``match.json`` and ``step.json``) into named numbers.

Names are ``STEP.KEY``:

* regression: ``STEP.test`` / ``STEP.val`` — IOD error % on the step's test / validation split (the
  validation split is also evaluated as a test, so ``STEP.val`` is the selection metric of the kept
  epoch); ``STEP.test.pck`` and ``STEP.test.paper_pck`` — PCK % (correct and the reference's);
  with several ``--n-train`` sizes ``STEP.test.nN`` and ``STEP.test.nN.std`` (also ``.pck``); the
  no-feature reference (mean training shape) of the same training rows as ``KEY.mean_shape`` (``.std``,
  ``.pck``), for runs that record it;
  ``STEP.epoch`` — the epoch kept;
* matching: ``STEP.same`` / ``STEP.diff`` — errors in the 70-px frame;
* every step: ``STEP.wall_min`` — wall-clock over all attempts, minutes.

A number that is missing (the step has not run, or the metric does not apply) is simply absent.
"""

from __future__ import annotations

import json
from pathlib import Path

from equinv.experiments import markers as M
from equinv.experiments.plan import Step

Numbers = dict[str, float]


def read_json(path: Path) -> dict | None:
    """The JSON in ``path``, or ``None`` when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _put(nums: Numbers, key: str, value) -> None:
    if value is not None:
        nums[key] = float(value)


def regression_numbers(name: str, res: dict, roles: list[str]) -> Numbers:
    """Numbers of one ``regression.json``; ``roles[i]`` names its ``i``-th test spec (test, val)."""
    nums: Numbers = {}
    specs = res.get("datasets", {}).get("test", [])
    runs = res.get("runs", [])
    several = len(runs) > 1 or any(not r.get("all_annotations", True) for r in runs)
    for role, spec in zip(roles, specs, strict=False):
        for run in runs:
            t = run.get("tests", {}).get(spec, {})
            key = f"{name}.{role}" + (f".n{run['n_train']}" if several else "")
            _put(nums, key, t.get("iod_error_percent"))
            _put(nums, f"{key}.std", t.get("iod_error_percent_std"))
            _put(nums, f"{key}.pck", t.get("pck"))
            _put(nums, f"{key}.pck.std", t.get("pck_std"))
            _put(nums, f"{key}.paper_pck", t.get("paper_pck"))
            _put(nums, f"{key}.mean_shape", t.get("mean_shape_iod_error_percent"))
            _put(nums, f"{key}.mean_shape.std", t.get("mean_shape_iod_error_percent_std"))
            _put(nums, f"{key}.mean_shape.pck", t.get("mean_shape_pck"))
    if runs and runs[0].get("per_repeat"):
        _put(nums, f"{name}.epoch", runs[0]["per_repeat"][0].get("selected_epoch"))
    return nums


def match_numbers(name: str, res: dict) -> Numbers:
    """The matching errors of one ``eval match`` record, keyed by step name."""
    nums: Numbers = {}
    _put(nums, f"{name}.same", res.get("match_error_same"))
    _put(nums, f"{name}.diff", res.get("match_error_diff"))
    return nums


def collect(steps: list[Step]) -> tuple[Numbers, dict[str, dict]]:
    """``(numbers, markers)`` of every step that has them."""
    nums: Numbers = {}
    marks: dict[str, dict] = {}
    for s in steps:
        m = M.read_marker(s)
        if m:
            marks[s.name] = m
            _put(nums, f"{s.name}.wall_min", (m.get("total_wall_s") or 0.0) / 60.0 if m.get("end") else None)
        out = Path(s.out)
        if "regression.json" in s.outputs and (res := read_json(out / "regression.json")):
            nums.update(regression_numbers(s.name, res, s.meta.get("tests", ["test"])))
        if "match.json" in s.outputs and (res := read_json(out / "match.json")):
            nums.update(match_numbers(s.name, res))
    return nums, marks
