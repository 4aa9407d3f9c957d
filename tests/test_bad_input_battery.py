"""The bad-input battery (issue 17): what a hostile-but-fair user tries on every command, kept as data.

One line per case: the command line (``{name}`` fields are filled in from the fixtures below), the expected
exit status and a phrase of the message. Every case runs in-process through :func:`equinv.cli.main` and must
end without a traceback; a refused command (status 2) prints exactly one ``equinv: error:`` line holding the
phrase and leaves ``{out}`` unwritten; an accepted one (status 0) prints the phrase on stdout. A new flag or
command joins with one line. Invalid options fail before any work, so the battery stays fast.

Fields: ``{S}`` a tiny synthetic set; ``{out}`` a fresh output path of the test (``{scratch}`` one that may
be written); ``{file}`` an existing regular file; ``{nodir}`` a path below that file; ``{ro}`` a folder nobody
may write in (``/sys``); ``{fold}`` unlabeled images, in the folder ``{folddir}.npy``; ``{bomb}`` a folder with
a PNG whose header claims 100000x100000 pixels; ``{coco_*}`` COCO files with one fault each; ``{mtfl}`` an MTFL
list naming a missing image; ``{text}``, ``{trunc}`` a text file and a truncated safetensors file; ``{run}`` a
pretraining run (its config); ``{locked}`` a run directory locked by a live process; ``{three}`` a 3-landmark
COCO set; ``{existing}.npy`` / ``.json`` existing results.
"""

from __future__ import annotations

import json
import shlex
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from equinv.cli import main

S = "synthetic:8?size=64"
#: A device this machine lacks.
NO_CUDA = "cuda:99" if torch.cuda.is_available() else "cuda"
#: Small training runs, so that a wrongly accepted option would finish (and fail the case) quickly.
TRAIN = "--batch-size 4 --queue 8 --size 32 --epochs 1 --quiet"
MATCH = f"match --reference {S} --targets {S} --max-targets 2 --quiet"
REGRESS = f"eval regress --train {S} --test {S} --epochs 1 --quiet"
#: Every command that writes, with its required arguments before ``--out``.
WRITERS = {
    "pretrain": f"pretrain --data {S} {TRAIN}",
    "pretrain --method dve": f"pretrain --method dve --data {S} --quiet",
    "pretrain-dve": f"pretrain-dve --data {S} --quiet",
    "project": f"project --data {S} --val {S} --epochs 1 --quiet",
    "features": f"features --data {S} --quiet",
    "match": MATCH,
    "parts": f"parts --data {S} --quiet",
    "eval regress": REGRESS,
    "eval match": f"eval match --data {S} --pairs 2 --quiet",
    "eval segment": f"eval segment --train {S} --test {S} --epochs 1 --quiet",
    "fit": f"fit --train {S} --steps 1 --quiet",
    "predict": "predict {run} {fold} --quiet",
    "view": f"view --reference {S} --quiet",
    "report": "report {run}",
    "demo": "demo --n 8 --epochs 1",
    "data check": f"data check {S} --quiet",
}
#: Commands whose --out is one file, with a suffix they accept.
FILE_OUT = {"features": ".npy", "predict": ".json", "data check": ".png"}

CASES = [
    # --- valid input that used to crash
    ("features --data {fold}?limit=2 --out {out}.safetensors --quiet", 0, "sidecar"),
    # --- training on garbage
    (f"pretrain --data {S} --out {{out}} --lr nan {TRAIN}", 2, "argument --lr: 'nan' is not a finite number"),
    (f"pretrain --data {S} --out {{out}} --lr inf {TRAIN}", 2, "argument --lr: 'inf' is not a finite number"),
    (f"pretrain --data {S} --out {{out}} --temperature 0 {TRAIN}", 2, "argument --temperature: must be > 0"),
    (f"pretrain --data {S} --out {{out}} --epochs 0", 2, "argument --epochs: must be a positive integer"),
    (f"pretrain --data {S} --out {{out}} --epochs -1", 2, "argument --epochs: must be a positive integer"),
    (f"pretrain --data {S} --out {{out}} --momentum 2", 2, "argument --momentum: must be in [0, 1]"),
    (f"pretrain --data {S} --out {{out}} --grayscale 2", 2, "argument --grayscale: must be in [0, 1]"),
    (f"pretrain --data {S} --out {{out}} --max-minutes -1", 2, "argument --max-minutes: must be ≥ 0"),
    (f"pretrain-dve --data {S} --out {{out}} --max-minutes nan", 2, "argument --max-minutes: 'nan' is not a finite"),
    (f"project --data {S} --out {{out}} --epochs -1", 2, "argument --epochs: must be a positive integer"),
    (f"project --data {S} --out {{out}} --dim 0", 2, "argument --dim: must be a positive integer"),
    (f"project --data {S} --out {{out}} --tps banana", 2, "argument --tps: invalid choice"),
    (f"project --data {S} --val {{fold}} --out {{scratch}} --quiet", 2, "has no landmark annotations"),
    (f"pretrain-dve --data {S} --out {{out}} --lr -1", 2, "argument --lr: must be ≥ 0"),
    (f"pretrain-dve --data {S} --out {{out}} --epochs 0", 2, "argument --epochs: must be a positive integer"),
    (f"{MATCH} --points nan,nan --out {{out}}", 2, "--points must look like"),
    (f"{MATCH} --points 9999,9999 --out {{out}}", 2, "lies outside the reference image"),
    (f"{MATCH} --cols 0 --out {{out}}", 2, "argument --cols: must be a positive integer"),
    (f"{MATCH} --grid 0 --out {{out}}", 2, "argument --grid: must be a positive integer"),
    (f"eval match --data {S} --grid 0 --out {{out}}", 2, "argument --grid: must be a positive integer"),
    (f"data check {S} --workers -2 --out {{out}}.png", 2, "argument --workers: must be a positive integer"),
    # --- a resume that changes what defines the run
    (f"pretrain --resume {{run}} --lr 0.5 --data {S} --quiet", 2, "cannot change --lr 0.5 (run: default)"),
    ("pretrain --resume {run} --batch-size 2 --quiet", 2, "cannot change --batch-size 2 (run: 4)"),
    # --- flags: ranges, finite numbers, choices, devices
    *[(f"pretrain --data {S} --out {{out}} {flag}", 2, phrase) for flag, phrase in [
        ("--batch-size 0", "argument --batch-size: must be a positive integer, got 0"),
        ("--batch-size -4", "argument --batch-size: must be a positive integer, got -4"),
        ("--lr -1", "argument --lr: must be ≥ 0"), ("--size 0", "argument --size: must be a positive integer"),
        ("--queue 0", "argument --queue: must be a positive integer"),
        ("--bn-groups 0", "argument --bn-groups: must be a positive integer"),
        ("--workers -1", "argument --workers: must be ≥ 0"),
        ("--ckpt-every 0", "argument --ckpt-every: must be a positive integer"),
        ("--dim 0", "argument --dim: must be a positive integer"), ("--seed -1", "argument --seed: must be ≥ 0"),
        ("--dim 2.5", "argument --dim: '2.5' is not an integer"),
        ("--device banana", "argument --device: unknown device 'banana'"),
        (f"--device {NO_CUDA}", "argument --device:"), ("--arch resnet9", "argument --arch: invalid choice")]],
    (f"{REGRESS} --lr nan --out {{out}}", 2, "argument --lr: 'nan' is not a finite number"),
    (f"{REGRESS} --n-heatmaps 0 --out {{out}}", 2, "argument --n-heatmaps: must be a positive integer"),
    (f"{REGRESS} --n-train 0 --out {{out}}", 2, "argument --n-train: must be a positive integer"),
    (f"{MATCH} --max-targets 0 --out {{out}}", 2, "argument --max-targets: must be a positive integer"),
    (f"{MATCH} --batch 0 --out {{out}}", 2, "argument --batch: must be a positive integer"),
    (f"{MATCH} --size 0 --out {{out}}", 2, "argument --size: must be a positive integer"),
    (f"{MATCH} --cell 0 --out {{out}}", 2, "argument --cell: must be a positive integer"),
    (f"features --data {S} --image-size 0 --out {{out}}.npy", 2, "argument --image-size: must be a positive"),
    (f"features --data {S} --workers -1 --out {{out}}.npy", 2, "argument --workers: must be ≥ 0"),
    (f"project --data {S} --out {{out}} --batch-size 0", 2, "argument --batch-size: must be a positive integer"),
    (f"project --data {S} --out {{out}} --lr nan", 2, "argument --lr: 'nan' is not a finite number"),
    (f"project --data {S} --out {{out}} --arch resnet9", 2, "argument --arch: invalid choice"),
    (f"data check {S} --n-sheet 0 --out {{out}}.png", 2, "argument --n-sheet: must be a positive integer"),
    (f"eval segment --train {S} --test {S} --device banana --out {{out}}", 2, "argument --device: unknown device"),
    (f"eval match --data {S} --seed -3 --out {{out}}", 2, "argument --seed: must be ≥ 0"),
    (f"view --reference {S} --serve 70000 --out {{out}}", 2, "argument --serve: must be a port number"),
    ("predict {run} {fold} --workers -1 --out {out}.json", 2, "argument --workers: must be ≥ 0"),
    # --- dataset specs
    (f"data check {S}&holdout=nan --no-sheet", 2, "?holdout= must be a finite number, got 'nan'"),
    (f"data check {S}&holdout=inf --no-sheet", 2, "?holdout= must be a finite number, got 'inf'"),
    (f"data check {S}&holdout=2.5 --no-sheet", 2, "?holdout= must be a fraction in (0, 1) or a whole count"),
    (f"data check {S}&limit=1&limit=2 --no-sheet", 2, "option(s) limit given more than once"),
    (f"data check {S}&limit=1.5 --no-sheet", 2, "?limit= must be a whole number, at least 1"),
    (f"data check {S}&holdout=2&holdout_seed=-1 --no-sheet", 2, "?holdout_seed= must be a whole number"),
    ("data check synthetic:2000000 --no-sheet", 2, "the number of images must be 1..1000000"),
    # --- output locations
    *[(f"{argv} --out {{file}}", 2, "exists and is not a folder") for cmd, argv in WRITERS.items()
      if cmd not in FILE_OUT and cmd != "report"],
    *[(f"{argv} --out {{nodir}}{FILE_OUT.get(cmd, '')}", 2, "is not a folder") for cmd, argv in WRITERS.items()
      if cmd != "report"],
    *[(f"{argv} --out {{ro}}/x{FILE_OUT.get(cmd, '')}", 2, "cannot write in") for cmd, argv in WRITERS.items()
      if cmd != "report"],
    *[(f"{argv} --out /dev/full", 2, "must end in" if cmd in FILE_OUT else "/dev/full: exists and is not a folder")
      for cmd, argv in WRITERS.items() if cmd != "report"],
    ("report {run} {run} --out /dev/full", 2, "--out /dev/full: exists and is not a folder"),
    (f"data check {S} --no-sheet --skip-report /dev/full", 2, "--skip-report /dev/full: exists and is not a regular"),
    (f"{WRITERS['features']} --out {{folddir}}.npy", 2, "is a folder, not a file"),
    ("report {run} {run} --out {file}", 2, "exists and is not a folder"),
    ("report {file}", 2, "RUN_DIR {file}: exists and is not a folder"),
    (f"data check {S} --no-sheet --skip-bad --skip-report {{ro}}/skips.txt", 2, "--skip-report"),
    (f"data check {S} --no-sheet --skip-report {{folddir}}.npy", 2, "--skip-report {folddir}.npy: is a folder"),
    (f"data check {S} --out {{out}}.txt", 2, "must end in .png"),
    (f"view --reference {S} --screenshot /dev/full --out {{out}}", 2, "--screenshot /dev/full: must end in .png"),
    (f"view --reference {S} --screenshot {{ro}}/shot.png --out {{out}}", 2, "--screenshot {ro}/shot.png: cannot write"),
    ("features --data {S} --out {existing}.npy", 2, "already exists (use --force to replace it)"),
    ("predict {run} {fold} --out {existing}.json", 2, "already exists (use --force to replace it)"),
    # --- input files
    ("data check {bomb} --no-sheet --quiet", 2, "decompression bomb"),
    ("data check {bomb} --no-sheet --quiet --skip-bad", 0, "skipped        1"),
    (f"{REGRESS} --backbone {{trunc}} --out {{out}}", 2, "cannot read weights"),
    (f"{REGRESS} --backbone {{text}} --out {{out}}", 2, "not a weights file"),
    (f"{REGRESS} --source nmf --parts {{text}} --out {{out}}", 2, "not a readable safetensors file"),
    (f"eval regress --train {S} --test {{three}} --out {{out}} --quiet", 2, "use sets of the same landmarks"),
    (f"fit --train {S} --val {{three}} --out {{out}} --quiet", 2, "use sets of the same landmarks"),
    ("data check {mtfl} --no-sheet --quiet", 2, "training.txt:2: "),
    *[(f"data check {{coco_{fault}}} --no-sheet --quiet", 2, phrase) for fault, phrase in [
        ("unknown_category", "unknown category_id 7"), ("no_category", "no category_id"),
        ("negative_bbox", "bbox width and height must be >= 0"), ("num_keypoints", "num_keypoints 999"),
        ("visibility", "has visibility 7")]],
    *[(f"data check {{coco_{fault}}} --no-sheet --quiet --skip-bad", 0, "skipped        1")
      for fault in ("unknown_category", "no_category", "negative_bbox", "num_keypoints", "visibility")],
    # --- run directories
    (f"pretrain --data {S} --out {{locked}} {TRAIN}", 2, "in use by process"),
    ("pretrain --resume {locked} --quiet", 2, "in use by process"),
    (f"pretrain --data {S} --out {{run}} {TRAIN}", 2, "already holds a run; use --resume"),
]


# ----------------------------------------------------------------------------- fixtures
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _bomb(folder: Path) -> Path:
    """A folder with a good image and a PNG whose header declares 100000 x 100000 pixels."""
    folder.mkdir()
    Image.new("RGB", (16, 16)).save(folder / "ok.png")
    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    (folder / "big.png").write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
                                     + _png_chunk(b"IDAT", zlib.compress(b"\0" * 16)) + _png_chunk(b"IEND", b""))
    return folder


COCO_FAULTS = {
    "unknown_category": lambda a: a.update(category_id=7),
    "no_category": lambda a: a.pop("category_id"),
    "negative_bbox": lambda a: a.update(bbox=[1, 1, -5, 10]),
    "num_keypoints": lambda a: a.update(num_keypoints=999),
    "visibility": lambda a: a.update(keypoints=[10, 10, 7, 20, 20, 2, 30, 30, 2]),
    "none": lambda a: None,
}


def _coco(folder: Path, fault: str) -> str:
    """A COCO keypoint set of two 3-point annotations; the second carries ``fault``."""
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (64, 64), (90, 60, 30)).save(folder / name)
    anns = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "keypoints": [10, 10, 2, 20, 20, 2, 30, 30, 2],
             "num_keypoints": 3, "bbox": [0, 0, 60, 60]} for i in range(2)]
    COCO_FAULTS[fault](anns[1])
    data = {"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}], "annotations": anns,
            "categories": [{"id": 1, "name": "x", "keypoints": ["left_eye", "right_eye", "nose"]}]}
    (folder / "kp.json").write_text(json.dumps(data))
    return f"coco:{folder}"


def _mtfl(folder: Path) -> str:
    """An MTFL list whose second row names an image that does not exist."""
    (folder / "imgs").mkdir(parents=True)
    Image.new("RGB", (40, 40)).save(folder / "imgs" / "a.png")
    rows = [r"imgs\a.png 11 21 16 12 20 11 11 16 21 21 1 2 2 3", r"imgs\gone.png 11 21 16 12 20 11 11 16 21 21 1 2 2 3"]
    (folder / "training.txt").write_text("\n".join(rows) + "\n")
    return f"mtfl:{folder}"


@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    """The ``{name}`` fields of the cases (one set of input files for the whole module)."""
    from equinv.train.pretrain import PretrainConfig
    from equinv.train.rundir import RunDir

    root = tmp_path_factory.mktemp("battery")
    fold = root / "fold.npy"  # a folder whose name a file output could have
    fold.mkdir()
    for i in range(3):
        Image.fromarray(np.full((32, 32, 3), 60 * i, np.uint8)).save(fold / f"im{i}.png")
    (root / "file").write_text("x")
    (root / "text.txt").write_text("hello\nworld\n")
    (root / "trunc.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\"")
    run, locked = root / "run", root / "locked"
    for d in (run, locked):
        d.mkdir()
        PretrainConfig(data=[S], out=str(d), batch_size=4, queue=8).save(d / "config.json")
    holder = RunDir(locked)
    holder.lock()  # held by this (live) process for the module: any claim from a new descriptor is refused
    for name in ("existing.npy", "existing.json"):
        (root / name).write_text("old")
    f = {"S": S, "file": root / "file", "nodir": root / "file" / "x", "ro": Path("/sys"), "fold": f"folder:{fold}",
         "folddir": fold.with_suffix(""),
         "bomb": f"folder:{_bomb(root / 'bomb')}", "mtfl": _mtfl(root / "mtfl"), "text": root / "text.txt",
         "trunc": root / "trunc.safetensors", "run": run, "locked": locked, "existing": root / "existing",
         **{f"coco_{k}": _coco(root / k, k) for k in COCO_FAULTS}}
    f["three"] = f["coco_none"]
    yield f
    holder.release()


def _argv(line: str, fields: dict, tmp: Path) -> list[str]:
    return [a.format(**fields, out=tmp / "out", scratch=tmp / "scratch") for a in shlex.split(line)]


# ----------------------------------------------------------------------------- the battery
@pytest.mark.parametrize("line, code, phrase", CASES, ids=[c[0][:90] for c in CASES])
def test_battery(line, code, phrase, fields, tmp_path, capsys):
    out = tmp_path / "out"
    argv = _argv(line, fields, tmp_path)
    got = main(argv)  # any exception escaping main would be a traceback for the user
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err + cap.out
    errors = [ln for ln in cap.err.splitlines() if ln.startswith("equinv: error:")]
    assert got == code, f"exit {got}, expected {code}; stderr: {cap.err[-600:]}"
    phrase = phrase.format(**fields)
    if code == 0:
        assert not errors and phrase in cap.out, cap.out[-600:]
        return
    assert len(errors) == 1, cap.err
    assert phrase in errors[0], errors[0]
    assert not any(Path(str(out) + s).exists() for s in ("", ".npy", ".json", ".png", ".safetensors")), \
        "a refused command wrote its output"


def test_every_command_is_in_the_output_battery():
    """A new command that writes must join WRITERS (and so the output-location cases)."""
    from equinv.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices
    names = set()
    for name, p in sub.items():
        inner = [a for a in p._actions if a.__class__.__name__ == "_SubParsersAction"]
        names |= {f"{name} {s}" for s in inner[0].choices} if inner else {name}
    assert names - {"data kinds"} == {w for w in WRITERS if w != "pretrain --method dve"}


def test_cli_tps_presets_are_the_library_s():
    from equinv.augment.tps import PRESETS
    from equinv.commands.options import TPS_PRESETS

    assert TPS_PRESETS == tuple(PRESETS)


def test_a_failed_write_is_one_line(tmp_path, capsys, monkeypatch):
    """A write that fails after the early checks (a disk filling up meanwhile) is one line, not a traceback."""
    import errno

    from equinv.commands import data

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "sheet.png"))

    monkeypatch.setattr(data, "check", full)
    assert main(["data", "check", S, "--out", str(tmp_path / "sheet.png")]) == 2
    err = capsys.readouterr().err
    assert err == f"equinv: error: cannot write {tmp_path / 'sheet.png'}: No space left on device\n"
