"""Named pretraining recipes: ``PretrainConfig.from_preset`` and ``equinv pretrain --preset``."""

from __future__ import annotations

import json

import pytest

from equinv.cli import main
from equinv.errors import InputError
from equinv.train.presets import PRESETS
from equinv.train.pretrain import PretrainConfig


def test_paper_preset_is_the_reference_recipe():
    assert PretrainConfig.from_preset("paper", data=["x"]) == PretrainConfig(data=["x"])


def test_small_preset_sets_its_values_and_explicit_options_win():
    cfg = PretrainConfig.from_preset("small", data=["x"], queue=2048)
    assert cfg.preset == "small" and cfg.head == "mlp" and cfg.temperature == 0.2 and cfg.batch_size == 128
    assert cfg.queue == 2048  # given explicitly
    assert cfg.effective_lr == pytest.approx(0.03 * 128 / 256)  # the reference's linear lr scaling
    with pytest.raises(InputError, match="unknown preset 'tiny'"):
        PretrainConfig.from_preset("tiny", data=["x"])
    assert set(PRESETS) == {"paper", "small", "dense", "dense_aux"}


def test_dense_preset_is_the_paper_recipe_plus_the_equivariance_term():
    cfg = PretrainConfig.from_preset("dense", data=["x"])
    base = PretrainConfig(data=["x"])
    assert (cfg.dense, cfg.dense_temperature) == (1.0, 20.0) and base.dense == 0.0
    assert (cfg.head, cfg.temperature, cfg.queue, cfg.batch_size) == (base.head, base.temperature, base.queue,
                                                                       base.batch_size)


def test_dense_aux_preset_is_dense_through_another_face(tmp_path):
    cfg = PretrainConfig.from_preset("dense_aux", data=["x"])
    dense = PretrainConfig.from_preset("dense", data=["x"])
    assert cfg.dense_aux and not dense.dense_aux
    assert {**vars(cfg), "dense_aux": False, "preset": "dense"} == vars(dense)
    out = tmp_path / "run"
    assert main(["pretrain", "--data", "synthetic:16?size=48", "--arch", "resnet18", "--preset", "dense_aux",
                 "--batch-size", "8", "--queue", "16", "--epochs", "1", "--max-steps", "1", "--log-every", "1",
                 "--size", "32", "--out", str(out), "--quiet"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert (saved["preset"], saved["dense"], saved["dense_aux"]) == ("dense_aux", 1.0, True)
    rows = [json.loads(r) for r in (out / "log.jsonl").read_text().splitlines()]
    assert "dense" in rows[-1]  # the equivariance term was trained


def test_preset_help_names_each_flag_it_sets(capsys):
    assert main(["pretrain", "--help"]) == 0
    text = "".join(capsys.readouterr().out.split())  # argparse may wrap inside a hyphenated flag
    assert "--dense1.0,--dense-temperature20.0,--dense-aux:" in text and "--dense-auxTrue" not in text


def test_cli_records_the_preset_and_refuses_it_on_resume(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["pretrain", "--data", "synthetic:16?size=48", "--arch", "resnet18", "--preset", "small",
            "--batch-size", "8", "--queue", "16", "--epochs", "1", "--max-steps", "1", "--size", "32", "--out",
            str(out), "--quiet"]
    assert main(args) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["preset"], cfg["head"], cfg["temperature"], cfg["batch_size"], cfg["queue"]) == (
        "small", "mlp", 0.2, 8, 16)
    assert main(["pretrain", "--resume", str(out), "--preset", "small", "--quiet"]) == 2
    assert "--preset is fixed when a run starts" in capsys.readouterr().err
