import subprocess
import sys

from equinv.runtime import tune_allocator


def test_allocator_tuning_applies_on_glibc_and_respects_opt_out(monkeypatch):
    monkeypatch.delenv("EQUINV_MALLOPT", raising=False)
    for k in [k for k in __import__("os").environ if k.startswith("MALLOC_")]:
        monkeypatch.delenv(k)
    if sys.platform.startswith("linux"):
        assert tune_allocator() is True
    monkeypatch.setenv("EQUINV_MALLOPT", "0")
    assert tune_allocator() is False
    monkeypatch.delenv("EQUINV_MALLOPT")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert tune_allocator() is False


def test_tuned_process_still_computes():
    code = ("from equinv.runtime import tune_allocator; import torch; tune_allocator(); "
            "x = torch.ones(3000, 3000); y = x @ x; del y; z = (x @ x).double().sum(); print(int(z))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == str(3000**3)
