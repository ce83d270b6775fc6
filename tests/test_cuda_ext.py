"""The optional CUDA extension (csrc/, ``backend="cuda"``) on CPU; the GPU tests are in
test_cuda_ext_gpu.py.

On CPU (CI): every ``csrc/*.cu`` compiles with nvcc for sm_80 and sm_90a; the torch binding passes a
syntax check against torch's headers; and the kernel source itself runs under a host emulation
(csrc/emulation/host_emulator.cpp: fibers for threads, NaN-filled shared memory, guarded buffers,
a reference WMMA) against the fp64 oracle, with the tensor-core (sm_90) and FMA (pre-sm_70) code
paths.

Every numeric case: random parameters and inputs, the output pre-filled with NaN inside a larger
NaN buffer (an unwritten element or a write outside the channel slice fails), relative error
against the fp64 oracle within the dtype's tolerance (tests/helpers.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path

import pytest
import torch

from fused_inception import GOOGLENET_BLOCKS, InceptionSpec, cuda_ext, googlenet_spec

from .helpers import CUDA, CUDA_EXT_MARGIN, DTYPES, assert_margin_untouched, check_fused, nan_output

CSRC = Path(__file__).resolve().parent.parent / "csrc"
NVCC = shutil.which("nvcc")
CXX = shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")
DTYPE_CODE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}

requires_nvcc = pytest.mark.skipif(NVCC is None, reason="needs nvcc on PATH")


def _cuda_include() -> Path | None:
    """The CUDA toolkit's include directory (for cuda_fp16.h & co.), from nvcc or CUDA_HOME."""
    roots = [Path(os.path.realpath(NVCC)).parent.parent] if NVCC else []
    roots += [Path(p) for p in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda") if p]
    for r in roots:
        if (r / "include" / "cuda_fp16.h").is_file():
            return r / "include"
    return None


CUDA_INCLUDE = _cuda_include()


# ------------------------------------------------------------------------------------------------
# CPU: the builds. All compilers start together (one module fixture) and each test waits for its
# own: the binding's syntax check against torch's headers dominates (~45 s of CPU).

def _nvcc_cmd(src: Path, obj: Path) -> list[str]:
    # torch.utils.cpp_extension's nvcc flags (no half operators/conversions), -Werror, both archs.
    return [NVCC, "-std=c++17", "-O3", "-lineinfo", "--expt-relaxed-constexpr", "-D__CUDA_NO_HALF_OPERATORS__",
            "-D__CUDA_NO_HALF_CONVERSIONS__", "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__",
            "-Werror", "all-warnings", "-gencode", "arch=compute_80,code=sm_80",
            "-gencode", "arch=compute_90a,code=sm_90a", "-c", str(src), "-o", str(obj)]


def _binding_cmd(shim: Path) -> list[str]:
    from torch.utils.cpp_extension import include_paths

    # A CPU build of torch lacks the CMake-generated c10/cuda/impl/cuda_cmake_macros.h; the shim
    # supplies what a CUDA build's holds. Nothing is linked: this checks the binding compiles.
    incs = [*include_paths(), str(shim), sysconfig.get_paths()["include"], str(CUDA_INCLUDE), str(CSRC)]
    abi = int(torch.compiled_with_cxx11_abi())
    return [CXX, "-std=c++20", "-fsyntax-only", "-w", f"-D_GLIBCXX_USE_CXX11_ABI={abi}", "-DTORCH_EXTENSION_NAME=_C",
            "-DTORCH_API_INCLUDE_EXTENSION_H", *[f"-I{i}" for i in incs],
            str(CSRC / "binding.cpp")]


def _emulator_cmd(arch: int, exe: Path) -> list[str]:
    return [CXX, "-std=c++20", "-O2", "-Wall", "-Wextra", "-Wno-unknown-pragmas", f"-DEMU_ARCH={arch}",
            f"-I{CUDA_INCLUDE}", str(CSRC / "emulation" / "host_emulator.cpp"), "-o", str(exe)]


class _Job:
    def __init__(self, cmd: list[str], cwd: Path, nice: int = 0):
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     preexec_fn=(lambda: os.nice(nice)) if nice else None)

    def wait_ok(self, timeout: float = 600) -> None:
        out, _ = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, f"{' '.join(self.cmd)}\n{out[-6000:]}"


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """Starts every compile this module needs at once; values are _Job (or None when skipped)."""
    d = tmp_path_factory.mktemp("cuda_ext_build")
    jobs: dict[str, _Job | None] = {}
    if CXX and CUDA_INCLUDE:
        for arch in (900, 600):
            jobs[f"emu:{arch}"] = _Job(_emulator_cmd(arch, d / f"emu{arch}"), d)
    for cu in sorted(CSRC.glob("*.cu")):
        # Lower priority: the emulator builds (and the emulation tests) get the CPUs first.
        jobs[f"nvcc:{cu.name}"] = _Job(_nvcc_cmd(cu, d / f"{cu.stem}.o"), d, nice=5) if NVCC else None
    if CXX and CUDA_INCLUDE:
        if not _has_cuda_torch_headers():
            (d / "shim" / "c10" / "cuda" / "impl").mkdir(parents=True)
            (d / "shim" / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").write_text(
                "#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
        jobs["binding"] = _Job(_binding_cmd(d / "shim"), d, nice=5)
    yield {"dir": d, **jobs}
    for job in jobs.values():
        if job is not None and job.proc.poll() is None:
            job.proc.kill()
            job.proc.wait()


def _has_cuda_torch_headers() -> bool:
    from torch.utils.cpp_extension import include_paths

    return any((Path(p) / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").is_file() for p in include_paths())


# ------------------------------------------------------------------------------------------------
# CPU: the kernel source under host emulation.

requires_emulator = pytest.mark.skipif(CXX is None or CUDA_INCLUDE is None,
                                       reason="needs a C++ compiler and the CUDA headers (cuda_fp16.h)")


def _emulate(exe: Path, x: torch.Tensor, packed, spec: InceptionSpec, out: torch.Tensor, grid: int,
             vector: bool = True) -> str:
    """Runs the emulated kernel on CPU tensors: reads x's storage in place, writes into out's.
    Returns the emulator's report of the vector paths taken."""
    with tempfile.TemporaryDirectory() as d:
        def dump(name, t):  # the whole storage, as raw bytes
            raw = torch.empty(0, dtype=torch.uint8).set_(t.untyped_storage())
            Path(d, f"{name}.bin").write_bytes(raw.numpy().tobytes())

        dump("x", x)
        dump("out", out)
        for name, t in zip(("w_in", "b_in", "w3", "b3", "w5", "b5", "wp", "bp"), packed):
            assert t.is_contiguous() and t.storage_offset() == 0 and t.untyped_storage().nbytes() == t.nbytes
            dump(name, t)
        n, _, h, w = x.shape
        args = [exe, d, DTYPE_CODE[x.dtype], n, h, w, *spec.channels, spec.k3, spec.k5, int(spec.relu), grid,
                x.storage_offset(), *x.stride(), out.storage_offset(), *out.stride()]
        env = {**os.environ, **({} if vector else {"EMU_NO_VECTOR": "1"})}
        r = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, env=env)
        assert r.returncode == 0, r.stderr[-4000:]
        data = torch.frombuffer(bytearray(Path(d, "out.bin").read_bytes()), dtype=torch.uint8)
        out.untyped_storage().copy_(data.untyped_storage())
        return r.stderr


def emulate_case(builds, spec, n, h, w, dtype=torch.float32, layout="nchw", bias_shift=0.0, arch=900, grid=2,
                 specials=False, vector=True) -> str:
    """check_fused with the emulated kernel writing into a channel slice of a NaN buffer; returns
    the emulator's report of the vector paths taken."""
    builds[f"emu:{arch}"].wait_ok()
    reports = []

    def run(block, x):
        out, buf = nan_output(n, spec.out_channels, h, w, dtype, "cpu", layout == "channels_last", CUDA_EXT_MARGIN)
        reports.append(_emulate(builds["dir"] / f"emu{arch}", x, block.packed_weights(dtype), spec, out, grid, vector))
        assert_margin_untouched(buf, out, CUDA_EXT_MARGIN)
        return out

    check_fused(run, spec, n, h, w, dtype, layout, bias_shift=bias_shift, specials=specials, tf32=False)
    return reports[0]


_ARCHS = {"tc": 900, "fma": 600}  # WMMA for fp16/bf16 (sm_90) / FMA everywhere (pre-sm_70)


@requires_emulator
@pytest.mark.fast_cases("3a-torchvision-fp16-channels_last", "4d-paper-fp32-nchw", "5a-paper-bf16-sliced")
@pytest.mark.parametrize("name,variant,dt,layout", [
    (name, ("torchvision", "paper")[i % 2], *(("fp16", "channels_last"), ("bf16", "sliced"), ("fp32", "nchw"))[i % 3])
    for i, name in enumerate(GOOGLENET_BLOCKS)
], ids=lambda v: str(v))
def test_emulated_googlenet_blocks(builds, name, variant, dt, layout):
    check_hw = (5, 6) if name.startswith("5") else (4, 5)
    emulate_case(builds, googlenet_spec(name, variant), 1, *check_hw, DTYPES[dt], layout, grid=3)


@requires_emulator
@pytest.mark.fast_cases("tc-1x1x1x1x1x1x1-1x1-fp16", "tc-33x70x33x65x40x19x7-9x10-bf16",
                        "fma-33x19x17x7x1x3x33-13x17-fp16")
@pytest.mark.parametrize("channels,hw,dt", [
    ((1, 1, 1, 1, 1, 1, 1), (1, 1), "fp16"),
    ((7, 7, 7, 7, 7, 7, 7), (5, 5), "bf16"),
    ((19, 5, 3, 33, 7, 19, 1), (13, 17), "fp32"),
    ((33, 19, 17, 7, 1, 3, 33), (13, 17), "fp16"),
    ((33, 70, 33, 65, 40, 19, 7), (9, 10), "bf16"),  # several channel blocks, ragged tails
], ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else v)
@pytest.mark.parametrize("arch", list(_ARCHS))
def test_emulated_odd_shapes(builds, channels, hw, dt, arch):
    if arch == "fma" and dt == "fp32":
        pytest.skip("fp32 takes the FMA path on every architecture")
    emulate_case(builds, InceptionSpec(*channels, k3=3, k5=5), 2, *hw, DTYPES[dt], arch=_ARCHS[arch])


@requires_emulator
@pytest.mark.fast_cases("k1-k7", "k3-k5")
@pytest.mark.parametrize("k3,k5", [(1, 1), (3, 3), (5, 5), (7, 7), (1, 7), (7, 3), (3, 5), (5, 1)],
                         ids=lambda k: f"k{k}")
def test_emulated_kernel_sizes(builds, k3, k5):
    dt = torch.float16 if (k3 + k5) % 4 == 0 else torch.float32
    emulate_case(builds, InceptionSpec(9, 4, 6, 8, 3, 5, 4, k3=k3, k5=k5), 2, 9, 11, dt, "channels_last")


@requires_emulator
@pytest.mark.fast_cases("nchw-fp32-relu", "channels_last-fp16-norelu", "sliced-bf16-relu")
@pytest.mark.parametrize("relu", [True, False], ids=["relu", "norelu"])
@pytest.mark.parametrize("dt", list(DTYPES))
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "sliced"])
def test_emulated_dtypes_layouts_relu(builds, layout, dt, relu):
    spec = InceptionSpec(20, 8, 12, 16, 4, 8, 8, k3=3, k5=5, relu=relu, bias=True, batch_norm=relu)
    emulate_case(builds, spec, 2, 9, 10, DTYPES[dt], layout)


@requires_emulator
@pytest.mark.fast_cases("5")
@pytest.mark.parametrize("k", [3, 5, 7])
def test_emulated_halo_is_zero_padded_after_relu(builds, k):
    # Strongly positive biases: relu(bias) != 0, so a halo padded with the reduce of a zero input
    # (instead of zeros) changes every border pixel.
    spec = InceptionSpec(8, 4, 6, 8, 3, 5, 4, k3=k, k5=k, bias=True, batch_norm=False)
    emulate_case(builds, spec, 2, 9, 9, torch.float16, bias_shift=3.0)


@requires_emulator
@pytest.mark.fast_cases("grid5")
@pytest.mark.parametrize("grid", [1, 5, 1000], ids=lambda g: f"grid{g}")
def test_emulated_grid_stride_loop(builds, grid):
    # Fewer blocks than work items: each block loops; more: the extra blocks find no work.
    emulate_case(builds, InceptionSpec(24, 20, 18, 36, 17, 20, 17, k3=3, k5=5), 2, 9, 11, torch.float16, grid=grid)


@requires_emulator
@pytest.mark.fast_cases("vector-40x24x40x72x8x16x8-fp16-x1-out1-weights1",
                        "scalar-36x24x12x20x8x16x8-fp16-x0-out0-weights1")
@pytest.mark.parametrize("channels,dt,paths", [
    # Channel counts that are multiples of the 16-byte vector: every vector path, ragged tails
    # (40 = 32 + 8 input channels, 72 = 64 + 8 outputs).
    ((40, 24, 40, 72, 8, 16, 8), "fp16", "x 1, out 1, weights 1"),
    ((40, 24, 40, 72, 8, 16, 8), "bf16", "x 1, out 1, weights 1"),
    ((20, 12, 8, 36, 4, 8, 4), "fp32", "x 1, out 1, weights 1"),
    # Misaligned counts: vector loads of x off, weight rows and channel slices per call.
    ((36, 24, 12, 20, 8, 16, 8), "fp16", "x 0, out 0, weights 1"),
], ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else v.replace(", ", "-").replace(" ", ""))
@pytest.mark.parametrize("vector", [True, False], ids=["vector", "scalar"])
def test_emulated_vector_paths(builds, channels, dt, paths, vector):
    spec = InceptionSpec(*channels, k3=3, k5=5)
    report = emulate_case(builds, spec, 2, 9, 11, DTYPES[dt], "channels_last", vector=vector)
    assert f"vector paths: {paths if vector else 'x 0, out 0, weights 0'}" in report


@requires_emulator
@pytest.mark.fast_cases("bf16")
@pytest.mark.parametrize("dt", list(DTYPES))
def test_emulated_nan_and_inf_propagate_like_the_reference(builds, dt):
    emulate_case(builds, InceptionSpec(8, 4, 6, 8, 3, 5, 4, k3=3, k5=5), 2, 9, 9, DTYPES[dt], specials=True)


# ------------------------------------------------------------------------------------------------
# CPU: compile checks (after the emulation tests, so the compilers run while those do).

def test_sources_are_where_the_builds_look():
    assert sorted(p.name for p in CSRC.glob("*.cu")) == ["inception_fwd.cu"]
    assert cuda_ext.source_dir() is not None
    # The kernel files stay free of torch headers (fast, standalone nvcc compiles).
    for f in [*CSRC.glob("*.cu"), *CSRC.glob("*.cuh"), *CSRC.glob("*.h")]:
        assert "torch/" not in f.read_text() and "ATen/" not in f.read_text(), f.name


@requires_nvcc
@pytest.mark.parametrize("cu", sorted(p.name for p in CSRC.glob("*.cu")))
def test_nvcc_compiles_for_sm80_and_sm90a(builds, cu):
    builds[f"nvcc:{cu}"].wait_ok()
    assert (builds["dir"] / cu.replace(".cu", ".o")).stat().st_size > 0


@pytest.mark.skipif(CXX is None or CUDA_INCLUDE is None, reason="needs a C++ compiler and the CUDA headers")
def test_binding_compiles_against_torch_headers(builds):
    builds["binding"].wait_ok()


# ------------------------------------------------------------------------------------------------
# CPU: the Python side of the extension.

@pytest.mark.skipif(torch.version.cuda is not None, reason="checks the message of a failed load on a CPU torch")
def test_failed_load_names_versions_and_is_remembered(monkeypatch):
    monkeypatch.setattr(cuda_ext, "_ext", None)
    monkeypatch.setattr(cuda_ext, "_error", None)
    assert cuda_ext.load_error() is None
    with pytest.raises(RuntimeError, match="torch .*CUDA.*nvcc.*C\\+\\+ compiler") as first:
        cuda_ext.load()
    assert "no CUDA support" in str(first.value)
    assert cuda_ext.load_error() == str(first.value)
    assert not cuda_ext.available()
    with pytest.raises(RuntimeError) as second:  # fails fast, same message
        cuda_ext.load()
    assert str(second.value) == str(first.value)


@pytest.mark.skipif(CXX is None, reason="needs a C++ compiler")
def test_setuptools_fallback_builds_and_caches(tmp_path):
    # The just-in-time path without ninja (torch's load() requires it) goes through setuptools;
    # checked here with a tiny C++ extension (the CUDA one needs a CUDA build of torch).
    src = tmp_path / "tiny.cpp"
    src.write_text("#include <pybind11/pybind11.h>\n"
                   "PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def(\"add\", [](int a, int b) { return a + b; }); }\n")
    out = tmp_path / "build"
    mod = cuda_ext.setuptools_build("fi_tiny_ext", [str(src)], [], ["-O0"], [], out, cuda=False)
    assert mod.add(2, 3) == 5
    src.write_text("this is not C++")  # a second call imports the cached build, no recompilation
    assert cuda_ext.setuptools_build("fi_tiny_ext", [str(src)], [], ["-O0"], [], out, cuda=False).add(1, 1) == 2
    with pytest.raises(RuntimeError, match="setuptools build of fi_broken failed"):
        cuda_ext.setuptools_build("fi_broken", [str(src)], [], [], [], tmp_path / "broken", cuda=False)


@pytest.mark.skipif(CUDA, reason="CPU-only check")
def test_not_available_without_a_cuda_device():
    assert cuda_ext.available() is False
