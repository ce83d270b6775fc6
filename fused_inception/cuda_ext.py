"""The optional CUDA extension (``csrc/``): loading, just-in-time build, and the forward entry point.

Ahead of time, ``FUSED_INCEPTION_BUILD_CUDA=1 pip install .`` builds ``fused_inception._C``.
Otherwise the first use builds the same sources just in time with ``torch.utils.cpp_extension.load``
(cached in torch's extensions directory, ``TORCH_EXTENSIONS_DIR``) and logs once that it does so.
A failed build or import raises a ``RuntimeError`` naming the torch, CUDA and compiler versions;
the failure is remembered, so later calls fail fast with the same message (see ``load_error``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType

import torch

from .packing import PackedWeights
from .spec import InceptionSpec

__all__ = ["available", "load", "load_error", "source_dir", "versions", "setuptools_build", "inception_forward_cuda"]

_logger = logging.getLogger("fused_inception")
_lock = threading.Lock()
_ext: ModuleType | None = None
_error: str | None = None
_JIT_NAME = "fused_inception_cuda"
_SOURCES = ("binding.cpp", "inception_fwd.cu")  # the same set setup.py compiles (csrc/*.cpp, csrc/*.cu)


def source_dir() -> Path | None:
    """The directory holding the extension's sources: ``fused_inception/csrc`` in an installed
    package (setup.py ships them there), ``csrc/`` next to the package in a source checkout."""
    here = Path(__file__).resolve().parent
    for cand in (here / "csrc", here.parent / "csrc"):
        if all((cand / s).is_file() for s in _SOURCES):
            return cand
    return None


def _nvcc() -> str | None:
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME is not None and os.path.isfile(os.path.join(CUDA_HOME, "bin", "nvcc")):
        return os.path.join(CUDA_HOME, "bin", "nvcc")
    return shutil.which("nvcc")


def _version_line(cmd: list[str], marker: str = "") -> str:
    """The first line of ``cmd``'s output that contains ``marker``."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return "not found"
    return next((line.strip() for line in out if marker in line), "unknown")


def versions() -> str:
    """torch, CUDA and compiler versions, for error messages."""
    nvcc = _nvcc()
    nvcc_v = _version_line([nvcc, "--version"], "release") if nvcc else "not found"
    cxx = os.environ.get("CXX", "c++")
    return (f"torch {torch.__version__}, torch CUDA {torch.version.cuda}, nvcc {nvcc_v!r}, "
            f"C++ compiler {cxx}: {_version_line([cxx, '--version'])!r}")


def available() -> bool:
    """Cheap check: the extension is loaded, or can be imported or built (a CUDA device, and either
    the ahead-of-time module or nvcc plus the sources). False after a failed load."""
    if _ext is not None:
        return True
    if _error is not None or not torch.cuda.is_available():
        return False
    if importlib.util.find_spec("fused_inception._C") is not None:
        return True
    return source_dir() is not None and _nvcc() is not None


def load_error() -> str | None:
    """The message of the failed load, or None when it has not failed (or not been tried)."""
    return _error


def _import_aot() -> ModuleType | None:
    """The module built by ``FUSED_INCEPTION_BUILD_CUDA=1 pip install .``, or None."""
    if importlib.util.find_spec("fused_inception._C") is None:
        return None
    try:
        return importlib.import_module("fused_inception._C")
    except ImportError as exc:  # e.g. built against another torch: rebuild rather than fail
        _logger.warning("fused_inception: the prebuilt CUDA extension does not import (%s); "
                        "building it just in time instead", exc)
        return None


def _build_jit() -> ModuleType:
    src = source_dir()
    if src is None:
        raise RuntimeError("the extension's sources (csrc/) are not installed; reinstall with "
                           "FUSED_INCEPTION_BUILD_CUDA=1 pip install . or use a source checkout")
    if torch.version.cuda is None:
        raise RuntimeError("this torch build has no CUDA support")
    if _nvcc() is None:
        raise RuntimeError("no CUDA toolkit found: put nvcc on PATH or set CUDA_HOME")
    from torch.utils.cpp_extension import get_default_build_root, is_ninja_available
    from torch.utils.cpp_extension import load as cpp_load

    # torch rebuilds when the listed sources or the flags change; the hash of every file in csrc/
    # (headers included) in the flags makes a header edit rebuild too.
    digest = hashlib.sha256()
    for f in sorted(src.iterdir()):
        if f.is_file() and f.suffix in (".cu", ".cuh", ".h", ".cpp"):
            digest.update(f.name.encode() + b"\0" + f.read_bytes())
    tag = f"-DFUSED_INCEPTION_SRC_HASH={digest.hexdigest()[:16]}"
    sources = [str(src / s) for s in _SOURCES]
    cxx_flags, nvcc_flags = ["-O3", tag], ["-O3", "-lineinfo", tag]
    _logger.warning("fused_inception: building the CUDA extension just in time (first use, about a minute; "
                    "cached in %s)", os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
    if is_ninja_available():
        return cpp_load(name=_JIT_NAME, sources=sources, extra_cflags=cxx_flags, extra_cuda_cflags=nvcc_flags,
                        extra_include_paths=[str(src)], verbose=False)
    # torch's load() needs ninja; without it, setuptools' own compiler driver builds the same thing.
    key = hashlib.sha256(f"{digest.hexdigest()} {torch.__version__} {os.environ.get('TORCH_CUDA_ARCH_LIST')} "
                         f"{tuple(sys.version_info[:2])}".encode()).hexdigest()[:16]
    out = Path(get_default_build_root()) / f"{_JIT_NAME}_setuptools_{key}"
    return setuptools_build(_JIT_NAME, sources, [str(src)], cxx_flags, nvcc_flags, out, cuda=True)


def setuptools_build(name: str, sources: list[str], include_dirs: list[str], cxx_flags: list[str],
                     nvcc_flags: list[str], out: Path, cuda: bool = True) -> ModuleType:
    """Builds (unless ``out`` already holds it) and imports a torch extension with setuptools,
    without ninja, in a subprocess (setuptools' ``setup()`` is not meant to run in-process)."""
    def built() -> Path | None:
        hits = [out / f"{name}{sfx}" for sfx in importlib.machinery.EXTENSION_SUFFIXES]
        return next((h for h in hits if h.is_file()), None)

    if built() is None:
        out.mkdir(parents=True, exist_ok=True)
        kind = "CUDAExtension" if cuda else "CppExtension"
        args = {"cxx": cxx_flags, "nvcc": nvcc_flags} if cuda else {"cxx": cxx_flags}
        script = (
            "from setuptools import setup\n"
            f"from torch.utils.cpp_extension import BuildExtension, {kind}\n"
            f"setup(name={name!r}, ext_modules=[{kind}({name!r}, sources={sources!r}, "
            f"include_dirs={include_dirs!r}, extra_compile_args={args!r})], "
            "cmdclass={'build_ext': BuildExtension.with_options(use_ninja=False)}, "
            f"script_args=['build_ext', '--build-lib', {str(out)!r}, '--build-temp', {str(out / 'tmp')!r}])\n"
        )
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=out)
        if r.returncode != 0 or built() is None:
            raise RuntimeError(f"setuptools build of {name} failed:\n{(r.stdout + r.stderr)[-4000:]}")
    spec = importlib.util.spec_from_file_location(name, built())
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load() -> ModuleType:
    """The extension module, imported or built on first call. Raises ``RuntimeError`` on failure."""
    global _ext, _error
    if _ext is not None:
        return _ext
    with _lock:
        if _ext is not None:
            return _ext
        if _error is not None:
            raise RuntimeError(_error)
        try:
            ext = _import_aot() or _build_jit()
        except Exception as exc:
            _error = (f"fused_inception: the CUDA extension could not be loaded or built ({versions()}): "
                      f"{type(exc).__name__}: {exc}")
            raise RuntimeError(_error) from exc
        _ext = ext
    return ext


def inception_forward_cuda(x: torch.Tensor, packed: PackedWeights, spec: InceptionSpec,
                           out: torch.Tensor | None = None) -> torch.Tensor:
    """Run the fused block on CUDA tensor ``x`` (N, Cin, H, W; any strides) in one launch.

    Returns (N, Cout, H, W) in ``x.dtype``, channels_last if ``x`` is, else contiguous; or writes
    into ``out`` (any strides without self-overlap, e.g. a channel slice of a larger tensor) and
    returns it.
    """
    ext = load()
    # The kernel reads weights densely and biases in fp32: both hold for pack_weights' output (no
    # copies then); other producers (e.g. folding traced by torch.compile) may hand in other forms.
    packed = PackedWeights(*(t.contiguous() if i % 2 == 0 else t.float().contiguous() for i, t in enumerate(packed)))
    return ext.forward(x, *packed, list(spec.channels), spec.k3, spec.k5, spec.relu, out)
