"""Build hook for the optional CUDA extension.

A plain ``pip install .`` is pure Python; it ships the sources in ``csrc/`` inside the package
(``fused_inception/csrc``) so that ``backend="cuda"`` can build the extension just in time on first
use. With ``FUSED_INCEPTION_BUILD_CUDA=1`` and a CUDA toolkit present, the extension is built ahead
of time as ``fused_inception._C`` through ``torch.utils.cpp_extension`` (ninja; honours
``TORCH_CUDA_ARCH_LIST`` and ``MAX_JOBS``); it needs torch at build time, so use
``FUSED_INCEPTION_BUILD_CUDA=1 pip install --no-build-isolation .``.
"""

import os
import shutil
from glob import glob
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CSRC_SUFFIXES = (".cu", ".cuh", ".h", ".cpp")


class BuildPyWithSources(build_py):
    """Copies csrc/ (top level: the extension's sources and headers) into the built package."""

    def run(self):
        super().run()
        dst = Path(self.build_lib) / "fused_inception" / "csrc"
        dst.mkdir(parents=True, exist_ok=True)
        for f in sorted(Path("csrc").glob("*")):
            if f.is_file() and f.suffix in CSRC_SUFFIXES:
                shutil.copy2(f, dst / f.name)


def cuda_extensions():
    if os.environ.get("FUSED_INCEPTION_BUILD_CUDA", "0") != "1":
        return {}
    try:
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
    except ImportError as exc:  # pip's default isolated build environment has no torch
        raise SystemExit("fused_inception: FUSED_INCEPTION_BUILD_CUDA=1 needs torch in the build environment; "
                         f"install with `pip install --no-build-isolation .` ({exc})") from exc

    if CUDA_HOME is None:
        print("fused_inception: FUSED_INCEPTION_BUILD_CUDA=1 but no CUDA toolkit found; skipping the extension")
        return {}
    # The same sources the just-in-time build compiles (fused_inception/cuda_ext.py).
    sources = sorted(glob("csrc/*.cpp")) + sorted(glob("csrc/*.cu"))
    if not sources:
        return {}
    ext = CUDAExtension(
        "fused_inception._C",
        sources=sources,
        include_dirs=[str(Path("csrc").resolve())],
        # No --use_fast_math: it flushes denormals and changes NaN/Inf handling of the epilogue.
        extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "-lineinfo"]},
    )
    return {"ext_modules": [ext], "build_ext": BuildExtension.with_options(use_ninja=True)}


def main():
    ext = cuda_extensions()
    cmdclass = {"build_py": BuildPyWithSources}
    if "build_ext" in ext:
        cmdclass["build_ext"] = ext.pop("build_ext")
    setup(cmdclass=cmdclass, **ext)


main()
