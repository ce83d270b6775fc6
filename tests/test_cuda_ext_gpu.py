"""The optional CUDA extension (csrc/, ``backend="cuda"``) on a GPU: the correctness matrix through
``FusedInception(backend="cuda")`` and the raw entry point, the op's contracts (opcheck,
torch.compile, CUDA graphs, autograd), and compute-sanitizer memcheck/racecheck. The CPU checks
(builds, host emulation) are in test_cuda_ext.py.

Every numeric case: random parameters and inputs, the output pre-filled with NaN inside a larger
NaN buffer (an unwritten element or a write outside the channel slice fails), relative error
against the fp64 oracle within the dtype's tolerance (tests/helpers.py; fp32 without TF32: the
extension computes fp32 with plain FMA).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fused_inception import GOOGLENET_BLOCKS, GOOGLENET_SPATIAL, InceptionSpec, cuda_ext, googlenet_spec

from .helpers import (
    CUDA_EXT_MARGIN,
    DTYPES,
    assert_margin_untouched,
    check_fused,
    make_block,
    make_input,
    nan_output,
    oracle,
    rel_err,
    tolerance,
)

pytestmark = pytest.mark.gpu  # skipped without CUDA (conftest.py)


def gpu_case(spec, n, h, w, dtype, layout="nchw", bias_shift=0.0, specials=False):
    """check_fused through the raw entry point (into a channel slice of a NaN buffer), then the
    same block and input through ``FusedInception(backend="cuda")``."""
    def run(block, x):
        out, buf = nan_output(n, spec.out_channels, h, w, dtype, "cuda", layout == "channels_last", CUDA_EXT_MARGIN)
        with torch.no_grad():
            cuda_ext.inception_forward_cuda(x, block.packed_weights(dtype), spec, out=out)
        torch.cuda.synchronize()
        assert_margin_untouched(buf, out, CUDA_EXT_MARGIN)
        return out

    block, x, _, ref = check_fused(run, spec, n, h, w, dtype, layout, device="cuda", backend="cuda",
                                   bias_shift=bias_shift, specials=specials, tf32=False)
    with torch.no_grad():
        via_module = block(x)
    torch.cuda.synchronize()
    assert block.last_backend == "cuda"
    want_cl = layout == "channels_last"
    assert via_module.is_contiguous(memory_format=torch.channels_last if want_cl else torch.contiguous_format)
    if specials:
        assert torch.equal(via_module.isnan().cpu(), ref.isnan())
    else:
        assert rel_err(via_module.cpu(), ref) < tolerance(dtype, "cuda", tf32=False)


# dtype x layout rotates over the cases so every pair appears, without the full product (the GPU
# suite shares a short device budget).
_COMBOS = [(dt, layout) for dt in DTYPES for layout in ("channels_last", "nchw", "sliced")]


@pytest.mark.parametrize("name,variant,dt,layout", [
    (name, variant, *_COMBOS[(2 * i + j) % len(_COMBOS)])
    for i, name in enumerate(GOOGLENET_BLOCKS) for j, variant in enumerate(("torchvision", "paper"))
], ids=lambda v: str(v))
def test_gpu_googlenet_blocks(name, variant, dt, layout):
    s = GOOGLENET_SPATIAL[name]
    gpu_case(googlenet_spec(name, variant), 2, s, s, DTYPES[dt], layout)


@pytest.mark.parametrize("channels,hw,dt,layout", [
    (channels, hw, *_COMBOS[(3 * i + j) % len(_COMBOS)])
    for i, channels in enumerate([(1, 1, 1, 1, 1, 1, 1), (7, 7, 7, 7, 7, 7, 7), (19, 5, 3, 33, 7, 19, 1),
                                  (33, 19, 17, 7, 1, 3, 33), (33, 70, 33, 65, 40, 19, 7)])
    for j, hw in enumerate([(1, 1), (5, 5), (13, 17)])
], ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else v)
def test_gpu_odd_shapes(channels, hw, dt, layout):
    gpu_case(InceptionSpec(*channels, k3=3, k5=5), 3, *hw, DTYPES[dt], layout)


@pytest.mark.parametrize("k3,k5,relu,dt", [
    (k3, k5, relu, list(DTYPES)[(2 * i + r) % 3])
    for i, (k3, k5) in enumerate([(1, 1), (3, 3), (5, 5), (7, 7), (1, 7), (7, 3), (3, 5), (5, 1)])
    for r, relu in enumerate((True, False))
], ids=lambda v: str(v))
def test_gpu_kernel_sizes_relu_positive_bias(k3, k5, relu, dt):
    # Strongly positive biases: a halo padded with relu(bias) instead of 0 shows at every border.
    spec = InceptionSpec(19, 7, 33, 19, 1, 7, 33, k3=k3, k5=k5, relu=relu, bias=True, batch_norm=False)
    gpu_case(spec, 2, 13, 17, DTYPES[dt], "channels_last", bias_shift=3.0)


@pytest.mark.parametrize("dt", list(DTYPES))
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_gpu_nan_and_inf(dt, layout):
    gpu_case(googlenet_spec("4b"), 2, 14, 14, DTYPES[dt], layout, specials=True)


def test_gpu_offsets_beyond_2_to_the_31():
    spec = InceptionSpec(16, 16, 16, 16, 16, 16, 16)
    n = 2**31 // (64 * 28 * 28) + 2
    block = make_block(spec, dtype=torch.float16, device="cuda", backend="cuda")
    x = torch.randn(n, 16, 28, 28, dtype=torch.float16, device="cuda")
    with torch.no_grad():
        out = block(x)
    assert out.numel() > 2**31
    tail = slice(n - 2, n)
    assert rel_err(out[tail].cpu(), oracle(block, x[tail])) < tolerance(torch.float16, "cuda")


def test_gpu_empty_batch_and_one_launch():
    from torch.profiler import ProfilerActivity, profile

    spec = googlenet_spec("4a")
    block = make_block(spec, dtype=torch.float16, device="cuda", backend="cuda")
    with torch.no_grad():
        assert block(torch.empty(0, spec.in_channels, 14, 14, dtype=torch.float16, device="cuda")).shape == \
            (0, spec.out_channels, 14, 14)
        x = make_input(8, spec.in_channels, 14, 14, dtype=torch.float16, device="cuda", layout="channels_last")
        block(x)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            block(x)
            torch.cuda.synchronize()
    kernels = [e.name for e in prof.events() if e.device_type.name == "CUDA"]
    assert len(kernels) == 1 and "inception_fwd_kernel" in kernels[0], kernels


def test_gpu_opcheck_compile_graphs_autograd():
    from fused_inception.ops import inception_forward

    spec = InceptionSpec(24, 8, 12, 16, 4, 8, 8, k3=3, k5=5)
    block = make_block(spec, dtype=torch.float16, device="cuda", backend="cuda")
    x = make_input(2, 24, 9, 10, dtype=torch.float16, device="cuda", layout="channels_last")
    packed = block.packed_weights(torch.float16)
    torch.library.opcheck(inception_forward, (x, *packed, list(spec.channels), spec.k3, spec.k5, spec.relu, "cuda"))
    ref = oracle(block, x)
    with torch.no_grad():
        compiled = torch.compile(block, fullgraph=True)(x)
        assert rel_err(compiled.cpu(), ref) < tolerance(torch.float16, "cuda")
        static_x = x.clone()
        block(static_x)  # warm-up outside the capture (packing, extension load)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = block(static_x)
        static_x.copy_(x.flip(0))
        graph.replay()
        torch.cuda.synchronize()
        assert rel_err(static_out.cpu(), oracle(block, x.flip(0))) < tolerance(torch.float16, "cuda")
    # Autograd: the fused forward, PyTorch's backward; compared with the reference backend in full fp32.
    torch.backends.cudnn.allow_tf32 = False
    try:
        xg = x.float().requires_grad_()
        block32 = make_block(spec, dtype=torch.float32, device="cuda", backend="cuda")
        block32(xg).square().sum().backward()
        assert block32.last_backend == "cuda"
        ref_block = make_block(spec, dtype=torch.float32, device="cuda", backend="reference")
        ref_block.load_state_dict(block32.state_dict())
        xr = x.float().requires_grad_()
        ref_block(xr).square().sum().backward()
        assert rel_err(xg.grad.cpu(), xr.grad.cpu()) < 1e-4
    finally:
        torch.backends.cudnn.allow_tf32 = True


def test_gpu_clear_errors():
    spec = InceptionSpec(8, 4, 6, 8, 3, 5, 4)
    block = make_block(spec, dtype=torch.float16, device="cuda", backend="cuda")
    x = make_input(1, 8, 5, 5, dtype=torch.float16, device="cuda")
    packed = block.packed_weights(torch.float16)
    with pytest.raises(RuntimeError, match="CUDA tensor"):
        cuda_ext.inception_forward_cuda(x.cpu(), packed, spec)
    with pytest.raises(RuntimeError, match="w_in must be"):
        cuda_ext.inception_forward_cuda(x, packed._replace(w_in=packed.w_in.float()), spec)
    with pytest.raises(RuntimeError, match="expected 8 input channels"):
        cuda_ext.inception_forward_cuda(x[:, :7], packed, spec)
    big_k = InceptionSpec(8, 4, 6, 8, 3, 5, 4, k3=3, k5=41)
    big = make_block(big_k, dtype=torch.float32, device="cuda", backend="cuda")
    with pytest.raises(RuntimeError, match="shared memory"), torch.no_grad():
        big(x.float())


_SANITIZER_SCRIPT = textwrap.dedent("""
    import torch
    from fused_inception import InceptionSpec, cuda_ext
    from tests.helpers import make_block, make_input
    torch.manual_seed(0)
    for spec, hw, dtype, layout in [
        (InceptionSpec(7, 3, 5, 9, 4, 6, 2, k3=3, k5=5), (5, 6), torch.float16, "channels_last"),
        (InceptionSpec(33, 19, 40, 70, 7, 19, 1, k3=1, k5=7), (9, 4), torch.float32, "sliced"),
        (InceptionSpec(19, 65, 33, 3, 1, 2, 3, k3=7, k5=3), (1, 1), torch.bfloat16, "nchw"),
    ]:
        block = make_block(spec, dtype=dtype, device="cuda")
        x = make_input(2, spec.in_channels, *hw, dtype=dtype, device="cuda", layout=layout)
        cuda_ext.inception_forward_cuda(x, block.packed_weights(dtype), spec)
    torch.cuda.synchronize()
    print("sanitized run done")
""")


@pytest.mark.skipif(shutil.which("compute-sanitizer") is None, reason="needs compute-sanitizer on PATH")
@pytest.mark.parametrize("tool", ["memcheck", pytest.param("racecheck", marks=pytest.mark.slow)])
def test_gpu_compute_sanitizer(tool):
    cuda_ext.load()  # build (or import) outside the sanitizer; the child reuses the cache
    env = {**os.environ, "PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}  # exact allocations for memcheck
    cmd = ["compute-sanitizer", f"--tool={tool}", "--error-exitcode=17", sys.executable, "-c", _SANITIZER_SCRIPT]
    r = subprocess.run(cmd, cwd=Path(__file__).resolve().parent.parent, env=env, capture_output=True, text=True,
                       timeout=900)
    log = r.stdout + r.stderr
    assert r.returncode == 0 and "sanitized run done" in log, log[-6000:]
    summary = r"RACECHECK SUMMARY: 0 hazards" if tool == "racecheck" else r"ERROR SUMMARY: 0 errors"
    assert re.search(summary, log), log[-6000:]
