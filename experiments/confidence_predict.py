"""Does ``equinv predict``'s confidence go with the error on real labelled faces? (any saved model, any head)

    python experiments/confidence_predict.py MODEL_DIR SPEC

Predicts every image of the labelled ``SPEC`` with the model (confidence on, as ``equinv predict`` writes it)
and prints Spearman's ρ between per-point confidence and error (in inter-ocular distances, landmarks 0 and 1
being the eyes), and the ratio of the mean error of the least confident quarter of points to that of the most
confident quarter.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

import equinv
from equinv.landmarks.predict import PredictConfig, run_predict


def _ranks(a: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(a))


def main() -> None:
    model_dir, spec = sys.argv[1], sys.argv[2]
    model = equinv.load(model_dir)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "p.json"
        run_predict(model, model_dir, PredictConfig(inputs=[spec], out=str(out), batch=32))
        images = json.loads(out.read_text())["images"]
    err, conf = [], []
    for im in images:
        p, t, c = np.array(im["points"]), np.array(im["true"], dtype=float), np.array(im["confidence"])
        err += list(np.linalg.norm(p - t, axis=1) / np.linalg.norm(t[0] - t[1]))
        conf += list(c)
    err, conf = np.array(err), np.array(conf)
    rho = np.corrcoef(_ranks(err), _ranks(conf))[0, 1]
    q, order = len(err) // 4, np.argsort(conf)
    ratio = err[order[:q]].mean() / err[order[-q:]].mean()
    print(f"{model.meta['regressor'].get('kind', 'regressor')} head, {len(images)} images: Spearman rho {rho:.3f}; "
          f"mean error of the least / most confident quarter of points {ratio:.2f}")


if __name__ == "__main__":
    main()
