"""Importing the package: without Triton (macOS, Windows, a build without it), and with Triton's
interpreter mode fixed at import. Each case runs in a fresh interpreter."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Makes `import triton` (and its submodules) fail as if it were not installed.
NO_TRITON = '''
import sys

class NoTriton:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "triton":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoTriton())
'''

WITHOUT_TRITON = NO_TRITON + '''
import torch
import fused_inception as fi
from fused_inception.kernels import interpreting, triton_available

assert not triton_available() and not interpreting() and "triton" not in sys.modules
block = fi.FusedInception(8, 4, 6, 8, 3, 5, 4).eval()
ref = fi.ReferenceInception(block.spec).eval()
ref.load_state_dict(block.state_dict())
x = torch.randn(2, 8, 5, 5)
with torch.no_grad():
    out = block(x)
    assert block.last_backend == "reference", block.last_backend
    torch.testing.assert_close(out, ref(x), rtol=0, atol=0)
    try:
        fi.FusedInception(8, 4, 6, 8, 3, 5, 4, backend="triton").eval()(x)
    except RuntimeError as e:
        print(e)
    else:
        raise AssertionError("backend='triton' ran without Triton")
'''


def run_python(code: str, interpret: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret is not None:
        env["TRITON_INTERPRET"] = interpret
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                          cwd=ROOT)


@pytest.mark.parametrize("interpret", [None, "1"], ids=["default", "TRITON_INTERPRET=1"])
def test_without_triton_auto_runs_the_reference_and_triton_says_what_is_missing(interpret):
    proc = run_python(WITHOUT_TRITON, interpret)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "needs Triton" in proc.stdout and "pip install triton" in proc.stdout, proc.stdout


def test_interpreter_mode_is_the_one_at_import():
    # The kernel is defined on the first launch; TRITON_INTERPRET dropped after the import would
    # make Triton compile it for a GPU while the package still sends CPU tensors to it.
    pytest.importorskip("triton")
    proc = run_python('''
import os, torch
import fused_inception as fi
del os.environ["TRITON_INTERPRET"]
fi.FusedInception(8, 4, 6, 8, 3, 5, 4).eval()(torch.randn(1, 8, 3, 3))
''', "1")
    assert proc.returncode != 0 and "set TRITON_INTERPRET before importing fused_inception" in proc.stderr, \
        proc.stderr[-3000:]
