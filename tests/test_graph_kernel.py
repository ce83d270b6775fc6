"""The graph kernel (``kernels/triton_graph.py``) in Triton's interpreter: every block kind of
Inception-v3 (torchvision and pytorch-fid) and GoogLeNet against an fp64 reference, in fp32, fp16
and bf16, NCHW, channels_last and strided; NaN-filled outputs and workspaces (an unwritten element
shows); NaN and Inf inputs; bit-identical split results; the launch state left zero; one launch
per forward; clear errors for graphs it does not run.

Blocks are shrunk to a few odd channel counts (one above 16, for two column blocks of 16) on maps
of 5x6 to 9x9, with 16-pixel tiles that cross image boundaries, so the whole file runs in the
interpreter in a minute or two.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

pytest.importorskip("triton")

import fused_inception.kernels.triton_graph as tg  # noqa: E402
from fused_inception.graph import (  # noqa: E402
    BlockGraph,
    Conv,
    Pool,
    inception_a,
    inception_c,
    inception_d,
    inception_e,
)
from fused_inception.kernels.triton_inception import launch_state  # noqa: E402
from fused_inception.packing import conv_memory_format, graph_offsets, graph_packed_reference  # noqa: E402

from .helpers import (  # noqa: E402
    CFG16,
    DTYPES,
    GRAPH_CASES,
    add_specials,
    assert_margin_untouched,
    assert_matches,
    make_input,
    nan_output,
    requires_interpreter,
    small_graph,
    tolerance,
)

pytestmark = requires_interpreter


def packed(graph: BlockGraph, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flat weights (never zero, scaled by fan-in) in ``dtype`` and non-zero fp32 biases."""
    ws, bs = [], []
    for i in graph.convs:
        node = graph.nodes[i]
        fan = node.taps * node.cin
        w = torch.randn(fan * node.cout) / fan ** 0.5
        ws.append(torch.where(w == 0, 0.1, w))
        bs.append(torch.empty(node.cout).uniform_(0.1, 0.5) * torch.sign(torch.randn(node.cout)))
    w, b = torch.cat([torch.zeros(0), *ws]).to(dtype), torch.cat([torch.zeros(0), *bs])
    assert w.numel() == graph_offsets(graph)[-1][0] and (w != 0).all() and (b != 0).all()
    return w, b


def reference(x, graph, w, b) -> torch.Tensor:
    """The block in fp64 from the very (rounded) input and weights the kernel reads."""
    return graph_packed_reference(x.double(), graph, w.double(), b.double())


def run(graph, n, h, w_, dtype, layout="nchw", cfg=CFG16, specials=False, margin=0, **kw):
    x = make_input(n, graph.in_channels, h, w_, dtype=dtype, layout=layout)
    if specials:
        add_specials(x)
    w, b = packed(graph, dtype)
    ho, wo = graph.out_size(h, w_)
    out, buf = nan_output(n, graph.out_channels, ho, wo, dtype, channels_last=layout == "channels_last",
                          margin=margin)
    got = tg.block_forward_triton(x, w, b, graph, cfg, out=out, **kw)
    assert got is out
    if margin:
        assert_margin_untouched(buf, out, margin)
    return x, w, b, out


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("kind", list(GRAPH_CASES))
def test_block_matches_fp64_reference(kind, dtype, layout):
    """Every block kind, into a NaN-filled output, against the fp64 reference."""
    graph, n, h, w = GRAPH_CASES[kind]
    dt = DTYPES[dtype]
    x, wt, b, out = run(graph, n, h, w, dt, layout)
    assert_matches(out, reference(x, graph, wt, b), tolerance(dt))


@pytest.mark.parametrize("kind", ["A", "B", "E"])
def test_strided_input_and_output_slice(kind):
    """A strided input view and an output that is a channel slice of a wider NaN buffer: general
    strides both ways, nothing written outside the slice."""
    graph, n, h, w = GRAPH_CASES[kind]
    x, wt, b, out = run(graph, n, h, w, torch.float32, "sliced", margin=3)
    assert_matches(out, reference(x, graph, wt, b), tolerance(torch.float32))


@pytest.mark.parametrize("kind", ["C", "E", "pool5"])
def test_large_tiles(kind):
    """The tile shapes ``default_graph_config`` may pick on a GPU (128-pixel tiles, 128-wide column
    blocks, 64-channel chunks): tiles spanning several images, one column block per branch."""
    graph, n, h, w = GRAPH_CASES[kind]
    cfg = replace(CFG16, block_m=128, block_n=128, block_k=64, block_kr=64)
    x, wt, b, out = run(graph, max(n, 3), h, w, torch.float16, "channels_last", cfg=cfg)
    assert_matches(out, reference(x, graph, wt, b), tolerance(torch.float16))


# Channel counts that are multiples of 8 (16 bytes in fp16/bf16): the launcher picks ALIGN=8, the
# hinted path (vector loads). 24 channels leave half of a 16-channel chunk masked.
ALIGNED_CASES = {
    "A": (small_graph(inception_a(8, 8), 8, (8, 16, 24)), 2, 5, 6),
    "C": (small_graph(inception_c(8, 8), 16, (24, 8, 16)), 2, 5, 6),
    "D": (small_graph(inception_d(8), 8, (16, 24, 8)), 2, 7, 7),
    "E": (small_graph(inception_e(16), 8, (8, 16, 24)), 1, 5, 6),
}


def spy_align(monkeypatch) -> list[tuple[int, int]]:
    """The (ALIGN, X_ALIGN) of every launch from now on."""
    seen, real = [], tg._align

    def spy(*args):
        seen.append(real(*args))
        return seen[-1]

    monkeypatch.setattr(tg, "_align", spy)
    return seen


@pytest.mark.fast_cases("A-fp16-channels_last", "E-bf16-channels_last", "D-fp16-nchw")
@pytest.mark.parametrize("layout", ["channels_last", "nchw"])
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("kind", list(ALIGNED_CASES))
def test_aligned_channels(kind, dtype, layout, monkeypatch):
    """Multiples of 8 channels: ALIGN=8 (16-byte vectors of weights and workspaces), and for a
    channels_last x also X_ALIGN=8 (its loads hinted too); NCHW x keeps its scalar loads."""
    graph, n, h, w = ALIGNED_CASES[kind]
    dt = DTYPES[dtype]
    seen = spy_align(monkeypatch)
    x, wt, b, out = run(graph, n, h, w, dt, layout)
    assert seen == [(8, 8 if layout == "channels_last" else 1)]
    assert_matches(out, reference(x, graph, wt, b), tolerance(dt))


def test_aligned_channels_fp32(monkeypatch):
    """fp32: 16 bytes are 4 elements."""
    graph, n, h, w = ALIGNED_CASES["E"]
    seen = spy_align(monkeypatch)
    x, wt, b, out = run(graph, n, h, w, torch.float32, "channels_last")
    assert seen == [(4, 4)]
    assert_matches(out, reference(x, graph, wt, b), tolerance(torch.float32))


@pytest.mark.parametrize("what", ["x", "weight"])
def test_misaligned_pointer_falls_back(what, monkeypatch):
    """A channels_last x (or flat weights) one element past a 16-byte boundary, all channel counts
    multiples of 8: x's loads (or every hinted load) fall back to the scalar path, same result."""
    graph, n, h, w = ALIGNED_CASES["E"]
    dt = torch.float16
    x = make_input(n, graph.in_channels, h, w, dtype=dt, layout="channels_last")
    wt, b = packed(graph, dt)
    if what == "x":
        flat = torch.empty(x.numel() + 1, dtype=dt)
        x = flat[1:].view(n, h, w, graph.in_channels).permute(0, 3, 1, 2).copy_(x)
        assert x.is_contiguous(memory_format=torch.channels_last) and x.data_ptr() % 16 == 2
    else:
        wt = torch.empty(wt.numel() + 1, dtype=dt)[1:].copy_(wt)
    seen = spy_align(monkeypatch)
    ho, wo = graph.out_size(h, w)
    out, _ = nan_output(n, graph.out_channels, ho, wo, dt, channels_last=True)
    tg.block_forward_triton(x, wt, b, graph, CFG16, out=out)
    assert seen == [(8, 1) if what == "x" else (1, 1)]
    assert_matches(out, reference(x, graph, wt, b), tolerance(dt))


def test_odd_channels_not_aligned():
    """The odd channel counts of GRAPH_CASES: ALIGN=1, today's unhinted path."""
    for kind in ("A", "E", "googlenet-tv"):
        graph, n, h, w = GRAPH_CASES[kind]
        x = make_input(n, graph.in_channels, h, w, dtype=torch.float16, layout="channels_last")
        wt, b = packed(graph, torch.float16)
        sched = tg.graph_schedule_for(graph, n, h, w, CFG16, 4)
        assert tg._align(x, wt, b, sched) == (1, 1)


def test_default_config_and_output_layout():
    """No config (the heuristic, 64-pixel tiles) and no ``out``: the output follows the input's
    memory format."""
    graph, n, h, w = GRAPH_CASES["D"]
    for layout in ("nchw", "channels_last"):
        x = make_input(n, graph.in_channels, h, w, layout=layout)
        wt, b = packed(graph, torch.float32)
        out = tg.block_forward_triton(x, wt, b, graph)
        assert out.is_contiguous(memory_format=conv_memory_format(x))
        assert_matches(out, reference(x, graph, wt, b), tolerance(torch.float32))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf - inf in numpy
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
@pytest.mark.parametrize("kind", ["A", "B", "fid-E1", "fid-E2", "googlenet-tv", "pool5"])
def test_nan_and_inf_inputs(kind, dtype):
    """NaN, +-inf and a whole pixel of -inf: NaN and infinities where the reference has them
    (pools: NaN propagates, padding never wins the max; ReLU keeps NaN)."""
    graph, n, h, w = GRAPH_CASES[kind]
    dt = DTYPES[dtype]
    x, wt, b, out = run(graph, max(n, 2), h, w, dt, specials=True)
    assert_matches(out, reference(x, graph, wt, b), tolerance(dt), specials=True)


@pytest.mark.parametrize("kind", ["C", "D", "googlenet-paper"])
def test_splits_bit_identical_and_state_left_zero(kind):
    """Split reductions (split_k 3): two launches give the same bits, with no host reset between
    them (the first left the launch state zero), and agree with the unsplit kernel."""
    graph, n, h, w = GRAPH_CASES[kind]
    cfg = replace(CFG16, split_k=3)
    sched = tg.graph_schedule_for(graph, n, h, w, cfg, 3)
    assert sched.max_splits == 3 and sched.n_slots > 0
    x, wt, b, first = run(graph, n, h, w, torch.float32, cfg=cfg, max_programs=3)
    state = launch_state(x.device, sched.state_size)
    assert not state.any(), "the launch left its state dirty"
    out, _ = nan_output(*first.shape, torch.float32)
    second = tg.block_forward_triton(x, wt, b, graph, cfg, max_programs=3, out=out)
    assert torch.equal(first, second)
    assert not state.any()
    unsplit = tg.block_forward_triton(x, wt, b, graph, CFG16)
    assert_matches(first, reference(x, graph, wt, b), tolerance(torch.float32))
    assert (first - unsplit).abs().max() < 1e-5


@pytest.mark.parametrize("programs", [1, 40])
def test_any_grid(programs):
    """One program (table order) and more programs than items: same result."""
    graph, n, h, w = GRAPH_CASES["E"]
    x, wt, b, out = run(graph, n, h, w, torch.float32, max_programs=programs)
    assert_matches(out, reference(x, graph, wt, b), tolerance(torch.float32))


def test_one_launch_per_forward(monkeypatch):
    graph, n, h, w = GRAPH_CASES["C"]
    x = make_input(n, graph.in_channels, h, w)
    wt, b = packed(graph, torch.float32)
    launches = []
    real_run = tg.graph_fwd_kernel.run

    def counting_run(*args, **kwargs):
        launches.append(kwargs.get("grid"))
        return real_run(*args, **kwargs)

    monkeypatch.setattr(tg.graph_fwd_kernel, "run", counting_run)
    out = tg.block_forward_triton(x, wt, b, graph, CFG16)
    assert len(launches) == 1
    assert_matches(out, reference(x, graph, wt, b), tolerance(torch.float32))


def _bad(*nodes, outputs=None):
    return BlockGraph("bad", 4, nodes, outputs or (len(nodes) - 1,))


@pytest.mark.parametrize("graph,match", [
    (_bad(Pool(-1, "max", 3, 1, 1, name="pool"), Conv("c3", 0, 4, 5, 3, 1, 1)), "node 0 \\(pool\\).*1x1"),
    (_bad(Pool(-1, "avg", 3, 1, 1, name="pool"), Conv("c1", 0, 4, 5, 1, 2, 0)), "node 0 \\(pool\\)"),
    (_bad(Conv("c1", -1, 4, 5), Pool(0, "max", 3, 1, 1, name="pool")), "node 1 \\(pool\\).*block input"),
    (_bad(Pool(-1, "max", 3, 1, 1, name="p"), Pool(0, "max", 3, 1, 1, name="pp")), "node 1 \\(pp\\)"),
])
def test_unsupported_graphs_raise(graph, match):
    x = torch.randn(1, 4, 6, 6)
    wt, b = packed(graph, torch.float32)
    with pytest.raises(ValueError, match=match):
        tg.block_forward_triton(x, wt, b, graph, CFG16)


def test_bad_arguments_raise():
    graph, n, h, w = GRAPH_CASES["A"]
    x = make_input(n, graph.in_channels, h, w)
    wt, b = packed(graph, torch.float32)
    with pytest.raises(ValueError, match="fp32, fp16 and bf16"):
        tg.block_forward_triton(x.double(), wt.double(), b.double(), graph)
    with pytest.raises(ValueError, match="packed weights"):
        tg.block_forward_triton(x, wt[:-1], b, graph)
    with pytest.raises(ValueError, match="packed weights"):
        tg.block_forward_triton(x, wt.half(), b, graph)
    with pytest.raises(ValueError, match="must be"):
        tg.block_forward_triton(x[:, :-1], wt, b, graph)
