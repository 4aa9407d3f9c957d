import pytest
import torch

from equinv.checkpoint import Checkpoint, save_checkpoint
from equinv.errors import InputError


def test_round_trip_model_optimizer_extra(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    for _ in range(2):
        opt.zero_grad()
        net(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
    path = save_checkpoint(
        tmp_path / "c.safetensors", net.state_dict(), opt.state_dict(),
        extra_tensors={"queue": torch.ones(2, 2)}, meta={"epoch": 3, "step": 7},
    )
    ck = Checkpoint(path)
    assert ck.meta == {"epoch": 3, "step": 7}
    assert torch.equal(ck.extra["queue"], torch.ones(2, 2))
    net2 = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    net2.load_state_dict(ck.model)
    opt2 = torch.optim.SGD(net2.parameters(), lr=0.5)
    opt2.load_state_dict(ck.optimizer)
    for a, b in zip(net.state_dict().values(), net2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    x = torch.randn(5, 4)
    for o, n in ((opt, net), (opt2, net2)):
        o.zero_grad()
        n(x).pow(2).sum().backward()
        o.step()
    for a, b in zip(net.parameters(), net2.parameters(), strict=True):
        assert torch.equal(a, b)  # momentum buffers and lr restored exactly
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary left behind


def test_bad_checkpoint_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        Checkpoint(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match="junk.safetensors"):
        Checkpoint(junk)
