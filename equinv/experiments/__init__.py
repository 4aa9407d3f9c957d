"""The paper's experiments as one resumable plan: ``python -m equinv.experiments reproduce --budget cpu``.

Modules, in pipeline order:

* :mod:`~equinv.experiments.config` — budget configs (``experiments/configs/*.json``) and data overlays;
* :mod:`~equinv.experiments.plan` — the plan: named steps (``equinv`` argv, output dir, dependencies, table);
* :mod:`~equinv.experiments.markers` — ``step.json`` markers (argv, exit status, times, output digests);
* :mod:`~equinv.experiments.runner` — runs the steps in order, skipping done ones and resuming interrupted ones;
* :mod:`~equinv.experiments.collect` — reads every step's JSON output into named numbers;
* :mod:`~equinv.experiments.paper` — the paper's numbers, transcribed with table and line;
* :mod:`~equinv.experiments.tables` / :mod:`~equinv.experiments.claims` — tables and claim checks;
* :mod:`~equinv.experiments.results` — writes the results page (``docs/results.md``).
"""
