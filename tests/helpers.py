"""Shared by the tests: randomised blocks and inputs, the fp64 oracle, the one tolerance table and
``check_fused`` (a fused path against the oracle)."""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from fused_inception import BlockGraph, FusedBlock, FusedInception, InceptionSpec
from fused_inception.graph import Conv, Pool, inception_a, inception_b, inception_c, inception_d, inception_e
from fused_inception.kernels.triton_inception import interpreting
from fused_inception.kernels.tuning import TileConfig
from fused_inception.reference import ReferenceBlock, ReferenceInception

CUDA = torch.cuda.is_available()
BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
requires_interpreter = pytest.mark.skipif(not interpreting(), reason="needs TRITON_INTERPRET=1")

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# Tiny blocks for the interpreter: the torchvision variant (BN, 3x3 "5x5") and the paper's (bias,
# no BN, true 5x5); and a small block for the GPU tests of the op's integration.
TINY_TV = InceptionSpec(4, 2, 2, 3, 2, 3, 2)
TINY_PAPER = InceptionSpec.paper(4, 2, 2, 3, 2, 3, 2)
TINY_VARIANTS = {"torchvision": TINY_TV, "paper": TINY_PAPER}
CUDA_SPEC = InceptionSpec(64, 32, 48, 64, 16, 32, 32)

# GPU-only tests carry ``@pytest.mark.gpu``; conftest.py skips them without CUDA (one hook, one reason).

def small_graph(graph: BlockGraph, cin: int = 5, couts=(3, 5, 7, 17)) -> BlockGraph:
    """``graph`` with ``cin`` input channels and its convs' outputs cycling through ``couts`` (odd
    counts, one above 16 for two column blocks of 16): every block kind at interpreter speed."""
    chans, nodes, it = {-1: cin}, [], itertools.cycle(couts)
    for i, node in enumerate(graph.nodes):
        if isinstance(node, Conv):
            node = dataclasses.replace(node, cin=chans[node.src], cout=next(it))
            chans[i] = node.cout
        else:
            chans[i] = chans[node.src]
        nodes.append(node)
    return BlockGraph(graph.kind, cin, tuple(nodes), graph.outputs)


# The block cases of every graph test: id -> (graph, n, h, w). Small maps with odd sides; the
# stride-2 blocks get maps their valid (unpadded) windows fit.
GRAPH_CASES = {
    "A": (small_graph(inception_a(8, 4)), 2, 5, 6),
    "B": (small_graph(inception_b(8)), 1, 9, 9),
    "C": (small_graph(inception_c(8, 4), 3, (5, 3, 17, 7)), 2, 5, 6),
    "D": (small_graph(inception_d(8)), 2, 7, 7),
    "E": (small_graph(inception_e(8)), 1, 5, 6),
    "fid-A": (small_graph(inception_a(8, 4, fid=True)), 2, 5, 6),
    "fid-C": (small_graph(inception_c(8, 4, fid=True), 7), 1, 6, 5),
    "fid-E1": (small_graph(inception_e(8, "avg_exclude_pad")), 2, 5, 6),
    "fid-E2": (small_graph(inception_e(8, "max")), 1, 5, 6),
    "googlenet-tv": (InceptionSpec(5, 3, 4, 5, 2, 17, 3).graph, 2, 5, 6),
    "googlenet-paper": (InceptionSpec.paper(7, 3, 4, 5, 2, 7, 3).graph, 1, 6, 5),
    # Not an Inception block: a conv that is both an output and a workspace, a padded stride-2 conv
    # of x, a padded stride-2 max-pool to the output, a 3x1 conv reading a padded map.
    "mixed": (BlockGraph("mixed", 5, (Conv("s2", -1, 5, 17, 3, 2, 1), Conv("k3", 0, 17, 7, 3, 1, 1),
                                      Conv("k31", 1, 7, 3, (3, 1), 1, (1, 0), relu=False),
                                      Pool(-1, "max", 3, 2, 1, name="pool")), (0, 2, 3)), 2, 7, 7),
    # 5x5 pools (the graph kernel's runtime tap loop; 3x3 ones are unrolled): an avg-pool without
    # padding in its divisor read by a 1x1 conv, a padded max-pool to the output.
    "pool5": (BlockGraph("pool5", 5, (Pool(-1, "avg", 5, 1, 2, count_include_pad=False, name="avg5"),
                                      Conv("p1", 0, 5, 17, relu=False), Pool(-1, "max", 5, 1, 2, name="max5")),
                         (1, 2)), 2, 7, 6),
}
# The graph kernel's tests run 16-pixel tiles and 16-wide column blocks: many tiles crossing image
# boundaries, and two column blocks for 17 channels.
CFG16 = TileConfig(block_m=16, block_n=16, block_k=16, block_kr=16)

TV_KEYS = {  # torchvision's Inception state_dict keys (BasicConv2d: conv + bn)
    f"{b}.{s}" for b in ("branch1", "branch2.0", "branch2.1", "branch3.0", "branch3.1", "branch4.1")
    for s in ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked")
}

# One tolerance per compute dtype: relative error ||out - ref|| / ||ref|| against an fp64 reference.
TOLERANCE = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,   # full fp32 (the interpreter, or cudnn.allow_tf32 = False)
    "tf32": 3e-3,          # fp32 on tensor cores
    torch.float16: 3e-3,
    torch.bfloat16: 2e-2,
}


# Gradients: relative error of each gradient against fp64 autograd of the reference block.
GRAD_TOLERANCE = {torch.float32: 1e-5, "tf32": 5e-3, torch.float16: 5e-3, torch.bfloat16: 3e-2}


def _tf32(dtype: torch.dtype, device: str, tf32: bool | None) -> bool:
    """fp32 on a CUDA device computes in TF32 when cuDNN may (``tf32=None``) or when told so."""
    on = torch.backends.cudnn.allow_tf32 if tf32 is None else tf32
    return dtype == torch.float32 and str(device).startswith("cuda") and on


def tolerance(dtype: torch.dtype, device: str = "cpu", tf32: bool | None = None) -> float:
    """The output tolerance; ``tf32=False`` for a path that computes fp32 without TF32 whatever
    cuDNN's setting (the CUDA extension's FMA path)."""
    return TOLERANCE["tf32"] if _tf32(dtype, device, tf32) else TOLERANCE[dtype]


def grad_tolerance(dtype: torch.dtype, device: str = "cpu") -> float:
    return GRAD_TOLERANCE["tf32"] if _tf32(dtype, device, None) else GRAD_TOLERANCE[dtype]


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def randomize_(module: nn.Module, bias_shift: float = 0.0) -> nn.Module:
    """Random weights and BatchNorm statistics (never the zero/one defaults).

    ``bias_shift`` > 0 makes every bias strongly positive, so a halo padded with relu(bias)
    instead of 0 shows up as a large error.
    """
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.normal_(0, 1.0 / m.weight[0].numel() ** 0.5)
                if m.bias is not None:
                    m.bias.uniform_(-0.5, 0.5).add_(bias_shift)
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                if m.weight is not None:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.5, 0.5).add_(bias_shift)
    return module


def make_block(spec: InceptionSpec | BlockGraph, dtype=torch.float32, device="cpu", backend="auto",
               bias_shift: float = 0.0) -> FusedInception | FusedBlock:
    """A random fused block: ``FusedInception`` for a GoogLeNet spec, ``FusedBlock`` for a graph."""
    if isinstance(spec, BlockGraph):
        block = FusedBlock(spec, backend=backend)
    else:
        block = FusedInception.from_spec(spec, backend=backend)
    randomize_(block, bias_shift)
    return block.to(device=device, dtype=dtype).eval()


def oracle(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The block in fp64 on CPU, through plain PyTorch modules (no fused code involved)."""
    ref = (ReferenceBlock(block.graph) if isinstance(block, FusedBlock) else ReferenceInception(block.spec)).double()
    ref.load_state_dict({k: v.detach().double().cpu() for k, v in block.state_dict().items()})
    ref.eval()
    with torch.no_grad():
        return ref(x.detach().double().cpu())


def make_input(n: int, c: int, h: int, w: int, dtype=torch.float32, device="cpu", layout="nchw") -> torch.Tensor:
    """Random input in the given layout: "nchw", "channels_last" or "sliced" (a strided view)."""
    if layout == "sliced":
        big = torch.randn(n, c + 3, h + 2, 2 * w, dtype=dtype, device=device)
        x = big[:, 2:2 + c, 1:1 + h, ::2]
        assert not x.is_contiguous()
        return x
    x = torch.randn(n, c, h, w, dtype=dtype, device=device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


CUDA_EXT_MARGIN = 8  # channels of NaN each side of the CUDA extension's output slice (16-byte aligned)


def nan_output(n: int, c: int, h: int, w: int, dtype, device="cpu", channels_last: bool = False,
               margin: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A NaN-filled output (an unwritten element stays NaN) and the buffer it lies in: with
    ``margin`` > 0, channels [margin, margin + c) of a NaN buffer ``margin`` channels wider on each
    side (a write outside the slice shows in the buffer)."""
    buf = torch.full((n, c + 2 * margin, h, w), float("nan"), dtype=dtype, device=device)
    if channels_last:
        buf = buf.contiguous(memory_format=torch.channels_last)
    return buf[:, margin:margin + c], buf


def assert_margin_untouched(buf: torch.Tensor, out: torch.Tensor, margin: int) -> None:
    """nan_output's buffer still NaN outside ``out``'s channel slice."""
    c = out.shape[1]
    assert buf[:, :margin].isnan().all() and buf[:, margin + c:].isnan().all(), "wrote outside its channel slice"


def add_specials(x: torch.Tensor) -> None:
    """NaN, +inf and -inf in the input, and one whole pixel of -inf (padding must not win the max)."""
    x[0, 0, 1, 2] = float("nan")
    x[0, -1, -1, -1] = float("inf")
    x[-1, 0, 0, 0] = float("-inf")
    x[-1, :, x.shape[2] // 2, x.shape[3] // 2] = float("-inf")


def assert_matches(out: torch.Tensor, ref: torch.Tensor, tol: float, specials: bool = False) -> None:
    """``out`` against the fp64 oracle's ``ref``: no NaN and within ``tol``; or, with special values in
    the input, NaN and infinities where the reference has them and the finite rest within ``tol``."""
    out = out.detach().cpu()
    if not specials:
        assert not out.isnan().any(), "unwritten or NaN output elements"
        err = rel_err(out, ref)
        assert err < tol, f"relative error {err:.3g} >= {tol}"
        return
    assert torch.equal(out.isnan(), ref.isnan())
    assert torch.equal(out.isposinf(), ref.isposinf()) and torch.equal(out.isneginf(), ref.isneginf())
    finite = ref.isfinite()
    assert ref.isnan().any() and finite.any()
    assert rel_err(out[finite], ref[finite]) < tol


def check_fused(run, spec: InceptionSpec | BlockGraph, n: int, h: int, w: int, dtype=torch.float32, layout="nchw",
                device="cpu", backend="auto", bias_shift: float = 0.0, specials: bool = False,
                tf32: bool | None = None):
    """Builds a random block of ``spec`` (a GoogLeNet spec or any ``BlockGraph``) and an input
    (``layout``: see make_input; ``specials``: add_specials), runs ``out = run(block, x)`` (a path
    that takes an ``out=`` writes into nan_output's NaN-filled tensor) and compares ``out`` with the
    fp64 oracle within the dtype's tolerance (``tf32``: see tolerance). Returns (block, x, out, ref)."""
    block = make_block(spec, dtype=dtype, device=device, backend=backend, bias_shift=bias_shift)
    x = make_input(n, spec.in_channels, h, w, dtype=dtype, device=device, layout=layout)
    if specials:
        add_specials(x)
    out = run(block, x)
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    ref = oracle(block, x)
    assert_matches(out, ref, tolerance(dtype, device, tf32), specials)
    return block, x, out, ref


def bench_module(name: str):
    """A module of benchmarks/ (a folder of scripts, not a package)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)
