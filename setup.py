"""Build hook for the optional CUDA extension.

A plain ``pip install .`` is pure Python. With ``FUSED_INCEPTION_BUILD_CUDA=1`` and a CUDA toolkit
present, the extension in ``csrc/`` is built ahead of time through ``torch.utils.cpp_extension``
(ninja; honours ``TORCH_CUDA_ARCH_LIST`` and ``MAX_JOBS``). Without it, ``backend="cuda"`` builds
the extension just in time on first use.
"""

import os

from setuptools import setup


def cuda_extensions():
    if os.environ.get("FUSED_INCEPTION_BUILD_CUDA", "0") != "1":
        return {}
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension

    if CUDA_HOME is None:
        print("fused_inception: FUSED_INCEPTION_BUILD_CUDA=1 but no CUDA toolkit found; skipping the extension")
        return {}
    from glob import glob

    sources = sorted(glob("csrc/*.cpp")) + sorted(glob("csrc/*.cu"))
    if not sources:
        return {}
    ext = CUDAExtension(
        "fused_inception._C",
        sources=sources,
        extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "--use_fast_math", "-lineinfo"]},
    )
    return {"ext_modules": [ext], "cmdclass": {"build_ext": BuildExtension.with_options(use_ninja=True)}}


setup(**cuda_extensions())
