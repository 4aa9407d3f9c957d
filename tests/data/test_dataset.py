import numpy as np
import pytest
import torch

from equinv.data.dataset import LandmarkDataset, final_view, make_loader
from equinv.data.preprocess import Preprocess
from equinv.errors import InputError, SkipLog

from .helpers import dot_centroid, write_index


def _pts(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(15, 50, size=(3, 2)).astype(np.float32) for _ in range(n)]


def test_cache_fills_once_and_batches_match(tmp_path):
    idx = write_index(tmp_path, _pts(6))
    pre = Preprocess(size=32, context=1.5)
    ds = LandmarkDataset(idx, pre)
    assert ds.prepare(progress=False) == 6
    again = LandmarkDataset(idx, pre)
    assert again.prepare(progress=False) == 0  # second pass decodes nothing
    b = again.__getitems__([4, 1, 3])
    assert b["image"].shape == (3, 3, 48, 48) and b["image"].dtype == torch.uint8
    assert b["index"].tolist() == [4, 1, 3]
    for row, j in enumerate([4, 1, 3]):
        direct = ds._decode(j)
        assert np.array_equal(b["image"][row].permute(1, 2, 0).numpy(), direct)
        img = direct
        for k in range(3):
            c = dot_centroid(img, k, b["landmarks"][row, k].numpy(), r=4)
            assert np.abs(c - b["landmarks"][row, k].numpy()).max() < 0.6


def test_no_cache_and_lazy_fill_agree(tmp_path):
    idx = write_index(tmp_path, _pts(3))
    pre = Preprocess(size=32)
    a = LandmarkDataset(idx, pre, cache=False)[2]
    b = LandmarkDataset(idx, pre)[2]  # fills entry 2 lazily
    assert torch.equal(a["image"], b["image"])


def test_loader_and_final_view(tmp_path):
    idx = write_index(tmp_path, _pts(5))
    ds = LandmarkDataset(idx, Preprocess(size=32, context=1.5))
    ds.prepare(progress=False)
    batches = list(make_loader(ds, batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert [b["image"].shape[0] for b in batches] == [2, 2, 1]
    assert sorted(torch.cat([b["index"] for b in batches]).tolist()) == [0, 1, 2, 3, 4]
    f = final_view(batches[0], ds.pre)
    assert f["image"].shape[-1] == 32
    assert torch.allclose(f["landmarks"], batches[0]["landmarks"] - 8)


def test_corrupt_image_raises_or_is_skipped(tmp_path):
    idx = write_index(tmp_path, _pts(4))
    bad = idx.records[2].path
    bad.write_bytes(bad.read_bytes()[:60])  # truncated PNG: header still readable
    pre = Preprocess(size=32)
    with pytest.raises(InputError, match="img002.png"):
        LandmarkDataset(idx, pre).prepare(progress=False)
    log = SkipLog(skip_bad=True)
    ds = LandmarkDataset(idx, pre)
    ds.prepare(log, progress=False)
    assert len(ds) == 3 and len(log) == 1 and "img002.png" in str(log.skips[0])
    assert 2 not in ds.__getitems__(range(3))["index"].tolist()
