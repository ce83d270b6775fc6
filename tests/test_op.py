"""The registered op (torch.ops.fused_inception.inception_forward) and what feeds it: opcheck
(schema, fake tensors, autograd registration, AOT dispatch), argument checks, the packed-weight
folding and its cache, ``last_backend`` naming the path that ran, a quiet forward.

On CPU the fused path is the Triton kernel in the interpreter (slow: about half a second per
launch even for the tiny blocks used here, so launches are counted).
"""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch.nn.utils.fusion import fuse_conv_bn_weights

from fused_inception import FusedInception, ops
from fused_inception.ops import block_forward, inception_forward
from fused_inception.packing import PackedWeights, pack_weights, pack_weights_differentiable

from .helpers import DTYPES, GRAPH_CASES, make_block, make_input, requires_interpreter
from .helpers import TINY_PAPER as PAPER
from .helpers import TINY_TV as TV
from .helpers import TINY_VARIANTS as VARIANTS

pytestmark = pytest.mark.usefixtures("default_tiles")
LAYOUTS = ("nchw", "channels_last")


def op_args(block: FusedInception, x: torch.Tensor, impl: str, packed=None) -> tuple:
    s = block.spec
    packed = packed if packed is not None else block.packed_weights(x.dtype)
    return (x, *packed, list(s.channels), s.k3, s.k5, s.relu, impl)


@pytest.mark.fast_cases("triton-fp32-channels_last", "triton-fp16-nchw",
                        "triton-bf16-channels_last", "reference-fp32-nchw")
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dt", list(DTYPES))
@pytest.mark.parametrize("impl", [pytest.param("triton", marks=requires_interpreter), "reference"])
def test_opcheck(impl, dt, layout):
    """schema, autograd registration, fake tensor (shapes and strides) and AOT dispatch with
    dynamic shapes, forward and backward."""
    dtype = DTYPES[dt]
    block = make_block(PAPER if layout == "nchw" else TV)
    x = make_input(1, 4, 3, 3, dtype=dtype, layout=layout).requires_grad_()
    packed = [t.clone().requires_grad_() for t in block.packed_weights(dtype)]
    torch.library.opcheck(inception_forward, op_args(block, x, impl, packed))


def test_op_rejects_bad_arguments():
    block = make_block(TV)
    x = make_input(1, 4, 3, 3)
    args = list(op_args(block, x, "reference"))
    with pytest.raises(ValueError, match="impl must be one of"):
        inception_forward(*args[:-1], "tensorrt")
    bad = list(args)
    bad[3] = bad[3][:, :, :2]  # w3 missing an output channel
    with pytest.raises(ValueError, match=r"packed w3 has shape \(9, 2, 2\), expected \(9, 2, 3\)"):
        inception_forward(*bad)
    bad = list(args)
    bad[1] = bad[1].double()
    with pytest.raises(TypeError, match="packed w_in is torch.float64"):
        inception_forward(*bad)
    with pytest.raises(ValueError, match="fused_inception::inception_forward expects 4 input channels, got 5"):
        inception_forward(make_input(1, 5, 3, 3), *args[1:])


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("dt", list(DTYPES))
def test_folding_equals_torch_fuse_conv_bn_weights(variant, dt):
    """The package's one BatchNorm fold (hand-written so that autograd and Dynamo pass through it)
    gives the very bits of torch.nn.utils.fusion.fuse_conv_bn_weights, laid out as the kernels read
    them; pack_weights (the inference cache) is the same fold under no_grad."""
    block = make_block(VARIANTS[variant])
    units = block._parts.tensors()
    folded = []
    for u in units:
        w, b = u.weight.detach().float(), None if u.bias is None else u.bias.detach().float()
        if u.has_bn:
            w, b = fuse_conv_bn_weights(w, b, u.bn_mean.float(), u.bn_var.float(), u.bn_eps,
                                        u.bn_weight.detach().float(), u.bn_bias.detach().float())
        folded.append((w.detach(), torch.zeros(w.shape[0]) if b is None else b.detach()))

    def gemm(w):  # [Cout, Cin, K, K] -> [K*K, Cin, Cout]
        return w.permute(2, 3, 1, 0).reshape(-1, w.shape[1], w.shape[0]).to(DTYPES[dt])

    (w1, b1), (wr3, br3), (w3, b3), (wr5, br5), (w5, b5), (wp, bp) = folded
    want = PackedWeights(torch.cat([gemm(w1)[0], gemm(wr3)[0], gemm(wr5)[0]], 1), torch.cat([b1, br3, br5]),
                         gemm(w3), b3, gemm(w5), b5, gemm(wp)[0], bp)
    for packed in (pack_weights_differentiable(units, DTYPES[dt]), pack_weights(units, DTYPES[dt])):
        for name, g, w in zip(PackedWeights._fields, packed, want):
            assert g.dtype == w.dtype and g.is_contiguous(), name
            assert torch.equal(g, w), name


@pytest.mark.parametrize("impl", ["triton", "cuda"])
def test_op_never_computes_under_a_kernels_name_off_its_device(impl, monkeypatch):
    """impl="triton" on a CPU tensor outside the interpreter, or impl="cuda" off CUDA, raises: the op
    never runs PyTorch ops while its caller believes a kernel ran."""
    import fused_inception.ops as ops

    monkeypatch.setattr(ops, "interpreting", lambda: False)
    block = make_block(TV)
    x = make_input(1, 4, 3, 3)
    with pytest.raises(RuntimeError, match=f"impl='{impl}' runs on CUDA tensors, got one on cpu"):
        inception_forward(*op_args(block, x, impl))


def test_cache_survives_no_change_and_refreshes_on_change():
    block = make_block(TV)
    p1 = block.packed_weights(torch.float32)
    assert block.packed_weights(torch.float32) is p1
    with torch.no_grad():
        block.branch2[1].bn.running_var.mul_(2.0)  # in place: version bump
    p2 = block.packed_weights(torch.float32)
    assert p2 is not p1 and not torch.equal(p2.w3, p1.w3)
    block.load_state_dict(copy.deepcopy(block.state_dict()))  # copy_ into the same tensors
    assert block.packed_weights(torch.float32) is not p2
    with pytest.raises(TypeError, match="packed_weights: dtype must be one of"):
        block.packed_weights(torch.int32)


@requires_interpreter
def test_last_backend_names_the_path_that_ran():
    tv, paper = make_block(TV), make_block(PAPER)
    x = make_input(2, 4, 3, 3)
    for block, mode, want in ((tv, "train", "reference"), (tv, "eval", "triton"), (paper, "train", "triton")):
        block.train(mode == "train")
        block(x)
        assert block.last_backend == want, (block.spec, mode)


@requires_interpreter
def test_forward_prints_and_logs_nothing(capfd, caplog):
    block = make_block(TV)
    x = make_input(1, 4, 3, 3)
    with caplog.at_level(logging.DEBUG, logger="fused_inception"):
        block(x)
        with torch.no_grad():
            block(x)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert not caplog.records


# -- fused_inception::block_forward (any BlockGraph) ----------------------------------------------
@pytest.mark.fast_cases("triton-fp32-B-channels_last", "triton-fp16-E-nchw", "reference-fp32-D-nchw")
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", ["B", "D", "E"])
@pytest.mark.parametrize("dt", list(DTYPES))
@pytest.mark.parametrize("impl", [pytest.param("triton", marks=requires_interpreter), "reference"])
def test_block_forward_opcheck(impl, dt, kind, layout):
    """The graph op: schema, autograd, fake shapes and strides of strided (stride-2) blocks, AOT
    dispatch with dynamic shapes."""
    graph, n, h, w = GRAPH_CASES[kind]
    dtype = DTYPES[dt]
    block = make_block(graph)
    x = make_input(n, graph.in_channels, h, w, dtype=dtype, layout=layout).requires_grad_()
    weight, bias = block.packed_weights(dtype)
    torch.library.opcheck(block_forward, (x, weight.clone().requires_grad_(), bias, graph.encode(), impl))


def test_block_forward_rejects_bad_arguments():
    graph, n, h, w = GRAPH_CASES["B"]  # stride 2 without padding: needs 3x3 at least
    block = make_block(graph)
    x = make_input(n, graph.in_channels, h, w)
    weight, bias = block.packed_weights(x.dtype)
    code = graph.encode()
    with pytest.raises(ValueError, match="GoogLeNet's block only"):
        block_forward(x, weight, bias, code, "cuda")
    with pytest.raises(ValueError, match="must be flat with"):
        block_forward(x, weight[:-1], bias, code, "reference")
    with pytest.raises(TypeError, match="bias is torch.float16"):
        block_forward(x, weight, bias.half(), code, "reference")
    with pytest.raises(ValueError, match="not an encoded block graph"):
        block_forward(x, weight, bias, code[:-1], "reference")
    with pytest.raises(ValueError, match="too small"):
        block_forward(make_input(1, graph.in_channels, 2, 5), weight, bias, code, "reference")


@requires_interpreter
def test_block_forward_decodes_each_graph_once():
    """The graph travels as ints on every call; decoding it (~50 us, a batch-1 block's kernel time)
    happens once per graph, and the module hands over the ints it encoded once."""
    graph, n, h, w = GRAPH_CASES["E"]
    block = make_block(graph, backend="triton")
    x = make_input(n, graph.in_channels, h, w)
    assert block._parts.code == graph.encode()
    with torch.no_grad():  # no autograd context: the op's own argument check is what decodes
        block(x)
        before = ops._decode.cache_info()
        block(x)
        after = ops._decode.cache_info()
    assert block.last_backend == "triton"
    assert after.misses == before.misses and after.hits > before.hits
