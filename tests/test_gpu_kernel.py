"""The compiled Triton kernel on a CUDA device, at real GoogLeNet sizes (skipped without CUDA).

Run with: python -m pytest -q -m gpu tests
"""

import pytest
import torch

from fused_inception import GOOGLENET_BLOCKS, GOOGLENET_SPATIAL, InceptionSpec, googlenet_spec
from fused_inception.kernels.triton_inception import inception_forward_triton
from fused_inception.kernels.tuning import pick_config

from .helpers import DTYPES, check_fused, make_block, make_input, nan_output, oracle, rel_err, tolerance

pytestmark = pytest.mark.gpu  # skipped without CUDA (conftest.py)


def check(spec, n, h, w, dtype, layout, bias_shift=0.0, tf32=True):
    """check_fused with the kernel launched directly into a NaN-filled output, then the same block
    and input through the module."""
    def run(block, x):
        out, _ = nan_output(n, spec.out_channels, h, w, dtype, "cuda", layout == "channels_last")
        with torch.no_grad():
            packed = block.packed_weights(dtype)
            inception_forward_triton(x, packed, spec, pick_config(x, packed, spec), out=out)
        return out

    torch.backends.cudnn.allow_tf32 = tf32
    try:
        block, x, _, ref = check_fused(run, spec, n, h, w, dtype, layout, device="cuda", bias_shift=bias_shift)
        with torch.no_grad():
            via_module = block(x)
        torch.cuda.synchronize()
        assert block.last_backend == "triton"
        assert rel_err(via_module.cpu(), ref) < tolerance(dtype, "cuda")
    finally:
        torch.backends.cudnn.allow_tf32 = True


# Every block in fp16 channels_last at batch 1, 8 and 64 (one compilation per block), and the
# three map sizes (3a: 28x28, 4e: 14x14, 5b: 7x7) in the other dtypes and layouts ("fp32" is TF32
# as PyTorch's conv default, "fp32-ieee" with cudnn.allow_tf32 off). Each (block, dtype, precision)
# is a compilation of the kernel: the matrix is sized for a short GPU session.
_MATRIX = [(name, n, "fp16", "channels_last") for name in GOOGLENET_BLOCKS for n in (1, 8, 64)]
_MATRIX += [(name, n, dt, layout) for name in ("3a", "4e", "5b")
            for n, dt, layout in ((8, "bf16", "channels_last"), (64, "bf16", "nchw"), (1, "fp16", "nchw"),
                                  (8, "fp32", "channels_last"), (8, "fp32-ieee", "nchw"))]


@pytest.mark.parametrize("name,n,dt,layout", _MATRIX, ids=lambda v: str(v))
def test_googlenet_blocks_real_sizes(name, n, dt, layout):
    s = GOOGLENET_SPATIAL[name]
    check(googlenet_spec(name), n, s, s, DTYPES[dt.split("-")[0]], layout, tf32=dt != "fp32-ieee")


@pytest.mark.parametrize("variant", ["paper", "torchvision"])
@pytest.mark.parametrize("layout", ["channels_last", "sliced"])
def test_paper_blocks_and_sliced_inputs(variant, layout):
    for name in ("3a", "4e", "5b"):
        s = GOOGLENET_SPATIAL[name]
        check(googlenet_spec(name, variant), 4, s, s, torch.float16, layout)


@pytest.mark.parametrize("k3,k5,dt", [(1, 1, "fp32"), (3, 5, "fp16"), (5, 3, "bf16"), (7, 7, "fp16"), (1, 7, "bf16")],
                         ids=lambda v: str(v))
@pytest.mark.parametrize("hw", [(1, 1), (5, 5), (13, 17)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_odd_shapes_and_kernel_sizes(k3, k5, dt, hw):
    # Channel counts that are not multiples of 16, strongly positive biases (halo padding).
    check(InceptionSpec(19, 7, 33, 19, 1, 7, 33, k3=k3, k5=k5, relu=k3 != 1), 3, *hw, DTYPES[dt], "sliced",
          bias_shift=2.0)


def test_nan_inf_on_gpu():
    spec = googlenet_spec("4b")
    block = make_block(spec, dtype=torch.float16, device="cuda")
    x = make_input(2, spec.in_channels, 14, 14, dtype=torch.float16, device="cuda", layout="channels_last")
    x[0, 3, 5, 5] = float("nan")
    x[1, :, 7, 7] = float("-inf")
    with torch.no_grad():
        out = block(x).cpu()
    ref = oracle(block, x)
    assert torch.equal(out.isnan(), ref.isnan())
    finite = ref.isfinite() & out.isfinite()
    assert rel_err(out[finite], ref[finite]) < tolerance(torch.float16)


def test_offsets_beyond_2_to_the_31():
    # N*C*H*W > 2^31: batch offsets must be computed in 64 bits.
    spec = InceptionSpec(16, 16, 16, 16, 16, 16, 16)
    n = 2**31 // (64 * 28 * 28) + 2
    block = make_block(spec, dtype=torch.float16, device="cuda")
    x = torch.randn(n, 16, 28, 28, dtype=torch.float16, device="cuda")
    with torch.no_grad():
        out = block(x)
    assert out.numel() > 2**31
    tail = slice(n - 2, n)
    ref = oracle(block, x[tail])
    assert rel_err(out[tail].cpu(), ref) < tolerance(torch.float16)


def test_one_launch_on_gpu():
    from torch.profiler import ProfilerActivity, profile
    spec = googlenet_spec("4a")
    block = make_block(spec, dtype=torch.float16, device="cuda")
    x = make_input(8, spec.in_channels, 14, 14, dtype=torch.float16, device="cuda", layout="channels_last")
    with torch.no_grad():
        block(x)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            block(x)
            torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type.name == "CUDA" and "inception" in e.name]
    others = [e.name for e in prof.events() if e.device_type.name == "CUDA" and "inception" not in e.name]
    assert len(kernels) == 1, [e.name for e in kernels]
    assert others == [], others


def test_cuda_graph_replays_and_two_streams():
    # The launch state (ticket, ready counts) is reset inside each launch: graph replays need no
    # memset, and two streams each have their own state. Batch 1 splits reductions: replays and
    # runs must be bit-identical.
    spec = googlenet_spec("4e")
    block = make_block(spec, dtype=torch.float16, device="cuda")
    xs = [make_input(1, spec.in_channels, 14, 14, dtype=torch.float16, device="cuda", layout="channels_last")
          for _ in range(2)]
    with torch.no_grad():
        want = [block(x) for x in xs]
        static_x = xs[0].clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            block(static_x)  # warm up on the capture stream
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = block(static_x)
        for i in (0, 1, 0, 1):
            static_x.copy_(xs[i])
            graph.replay()
            assert torch.equal(static_out, want[i])
        streams = [torch.cuda.Stream(), torch.cuda.Stream()]
        outs = [None, None]
        for _ in range(20):
            for i, s in enumerate(streams):
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    outs[i] = block(xs[i])
            for s in streams:
                torch.cuda.current_stream().wait_stream(s)
            torch.cuda.synchronize()
            assert torch.equal(outs[0], want[0]) and torch.equal(outs[1], want[1])
    assert rel_err(want[0].cpu(), oracle(block, xs[0])) < tolerance(torch.float16, "cuda")
