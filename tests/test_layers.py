"""The architecture as tests: import-linter's contracts (pyproject.toml) hold, and no function is over 80 lines."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 80


def test_import_contracts_hold():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]' installs it)")
    r = subprocess.run([exe, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "broken" not in r.stdout.lower().replace("0 broken", "")


def _long_functions(root: Path) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES:
                    out.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_no_function_is_over_80_lines_outside_tests():
    long = [f for d in ("equinv", "bench", "experiments") for f in _long_functions(REPO / d)]
    assert not long, "\n".join(long)


def test_the_cli_lists_the_architectures_the_models_have():
    """The parser keeps its own copy of the names (parsing must not import torch): it must agree."""
    from equinv.commands.options import ARCH_NAMES, DVE_ARCHS
    from equinv.models.backbones import ARCHS
    from equinv.models.dve import ARCHS as DVE

    assert ARCH_NAMES == tuple(ARCHS) and DVE_ARCHS == tuple(DVE)
