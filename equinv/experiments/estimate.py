"""Wall-clock estimates (minutes) of plan steps from a budget's measured ``rates``.

The figures behind the CPU rates: MoCo ResNet18 ≈ 60 img/s at batch 256 (96 px, 2 cores); a regressor
step (batch 32, 5 landmarks × 50 heat-maps on a 48² grid) ≈ 0.15 s, proportional to landmarks × grid²
(the heat-map softmax dominates); frozen feature extraction ≈ 120 img/s. They are estimates: a shared
machine is slower, and the first pass over a dataset also decodes its images.
"""

from __future__ import annotations

import math

#: Native heat-map grid per single tap for a 96-px input (protocol §2, §9), and DVE networks' output side.
TAP_GRID = {"conv1": 24, "conv2": 24, "conv3": 12, "conv4": 6, "conv5": 3}
DVE_GRID = {"smallnet": 35, "hourglass": 48}


def step_seconds(rates: dict, landmarks: int, grid: int = 48, predict: bool = False) -> float:
    """Seconds of one regressor batch (32 images), scaled from the 5-landmark, 48² figure."""
    base = rates["predict_step_s"] if predict else rates["regress_step_s"]
    return base * (landmarks / 5.0) * (grid / 48.0) ** 2


def pretrain_minutes(rates: dict, n: int, epochs: int, cap: float | None, key: str = "moco_img_s") -> float:
    """MoCo / DVE: ``epochs`` passes over ``n`` images, at most ``cap`` minutes."""
    m = epochs * n / rates[key] / 60.0 + rates["step_overhead_s"] / 60.0
    return min(m, cap) if cap else m


def project_minutes(rates: dict, n: int, epochs: int, val_pairs: int, rate: str = "project_img_s") -> float:
    """Projector training: ``epochs`` passes, plus a matching validation of ``val_pairs`` after each; ``rate``
    names the training rate (a variant that cannot cache its features has its own), else ``project_img_s``."""
    per_epoch = n / rates.get(rate, rates["project_img_s"]) + val_pairs / rates["match_pairs_s"]
    return (epochs * per_epoch + rates["step_overhead_s"]) / 60.0


def regress_minutes(rates: dict, n_train: int, n_val: int, n_tests: list[int], epochs: int, landmarks: int,
                    grid: int = 48) -> float:
    """One all-annotation regression: extraction once, then ``epochs`` of training and validation."""
    extract = (n_train + n_val + sum(n_tests)) / rates["extract_img_s"]
    train = epochs * math.ceil(n_train / 32) * step_seconds(rates, landmarks, grid)
    val = epochs * math.ceil(n_val / 32) * step_seconds(rates, landmarks, grid, predict=True)
    test = sum(math.ceil(n / 32) for n in n_tests) * step_seconds(rates, landmarks, grid, predict=True)
    return (extract + train + val + test + rates["step_overhead_s"]) / 60.0


def limited_minutes(rates: dict, n_all: int, n_test: int, sizes: list[int], repeats: int, epochs: int,
                    copies: int, landmarks: int, grid: int = 48) -> float:
    """Limited annotations: every size × repeat trains on ~1000 tiled rows per epoch (the reference sampler)."""
    total = (n_all + n_test) / rates["extract_img_s"]
    for n in sizes:
        tile = max(1, min(1000, n_all) // n)
        rows = n * copies * max(1, math.ceil(tile / copies)) if copies else n * tile
        fit = epochs * math.ceil(rows / 32) * step_seconds(rates, landmarks, grid)
        fit += n * copies / rates["extract_img_s"]
        fit += math.ceil(n_test / 32) * step_seconds(rates, landmarks, grid, predict=True)
        total += repeats * fit
    return (total + rates["step_overhead_s"]) / 60.0


def match_minutes(rates: dict, pairs: int) -> float:
    """Matching: ``pairs`` same- and ``pairs`` different-identity pairs."""
    return (2 * pairs / rates["match_pairs_s"] + rates["step_overhead_s"]) / 60.0


def small_minutes(rates: dict, images: int = 0) -> float:
    """A short step (parts fit, figures, report pages)."""
    return (images / rates["extract_img_s"] + 4 * rates["step_overhead_s"]) / 60.0
