"""The Triton kernel compiled for real GPU targets on a machine without one.

The interpreter runs the kernel's logic on CPU, but not Triton's GPU compiler: type promotion,
layouts, shared-memory and register budgets only show up there. This compiles the heuristic tile
configurations for sm_90 (H100/H200) and sm_80 (A100) with Triton's own ptxas, in a subprocess
without TRITON_INTERPRET, and checks what an SM can hold.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMEM_LIMIT = {90: 227 * 1024, 80: 163 * 1024}  # max dynamic shared memory per block


@pytest.mark.fast_cases("fp16-90", "bf16-90")
@pytest.mark.parametrize("dtype,arch", [("fp16", 90), ("bf16", 90), ("fp32", 90), ("fp16", 80)],
                         ids=lambda v: str(v))
def test_kernel_compiles_for_gpu_and_fits_an_sm(dtype, arch):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compile_report.py"), "--blocks", "4e", "--batches", "1,256",
         "--dtype", dtype, "--arch", str(arch)],
        env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("4e ")]
    assert len(rows) == 2, proc.stdout
    for row in rows:
        regs, stack, smem = (int(v) for v in row[10:13])
        assert smem <= SMEM_LIMIT[arch], row
        assert stack <= 64, f"register spills: {row}"
        mma = re.findall(r"\b(HGMMA|HMMA):(\d+)", " ".join(row[14:]))
        assert mma, f"no tensor-core instructions in the SASS: {row}"
