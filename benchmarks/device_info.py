#!/usr/bin/env python
"""The first two steps of device_check.sh: ``env`` prints nvidia-smi and the versions of Python,
torch, Triton, CUDA and the tools a GPU session uses; ``build-ext`` loads the optional CUDA
extension (prebuilt or built just in time), so later steps don't pay for it. Usage:

    python benchmarks/device_info.py env|build-ext
"""

from __future__ import annotations

import argparse
import importlib
import platform
import shutil
import subprocess
import sys

import environment as E
import providers as P
import torch


def env() -> int:
    smi = shutil.which("nvidia-smi")
    if smi is None or subprocess.run([smi]).returncode != 0:
        print("nvidia-smi failed")
    import triton

    print("python", platform.python_version(), "| torch", torch.__version__, "| torch CUDA", torch.version.cuda,
          "| cuDNN", torch.backends.cudnn.version(), "| triton", triton.__version__)
    print("CUDA available:", torch.cuda.is_available())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print(f"device: {p.name}, capability {p.major}.{p.minor}, {p.multi_processor_count} SMs, "
              f"{p.total_memory / 2**30:.0f} GiB, L2 {E.l2_bytes() / 2**20:.0f} MiB")
    for tool in ("nvcc", "compute-sanitizer", "ncu"):
        path = shutil.which(tool)
        out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout if path else ""
        print(f"{tool}: {path or 'not found'} {(out.strip().splitlines() or [''])[-1]}")
    for mod in ("matplotlib", "tqdm", "pytest"):
        try:
            print(f"{mod} {getattr(importlib.import_module(mod), '__version__', '?')}")
        except ImportError:
            print(f"{mod}: not installed")
    return 0


def build_ext() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 1
    E.import_fused_inception()
    problem = P.cuda_extension_problem()
    if problem is not None:
        print("CUDA extension not available:", problem)
        return 1
    from fused_inception import cuda_ext

    ext = cuda_ext.load()
    print("CUDA extension loaded:", getattr(ext, "__file__", ext))
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("env", "build-ext"))
    sys.exit(env() if p.parse_args().what == "env" else build_ext())
