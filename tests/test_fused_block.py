"""``FusedBlock``: any Inception-family block as a drop-in module, for every block kind of
``helpers.GRAPH_CASES`` (Inception-v3 A-E, pytorch-fid's variants, GoogLeNet's graph)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import fused_inception as fi
from fused_inception import FusedBlock, NotAnInceptionBlock
from fused_inception.reference import ReferenceBlock

from .helpers import (
    DTYPES,
    GRAPH_CASES,
    check_fused,
    grad_tolerance,
    make_block,
    make_input,
    randomize_,
    rel_err,
    requires_interpreter,
    tolerance,
)


@requires_interpreter
@pytest.mark.fast_cases("A-fp32-nchw", "B-fp16-channels_last", "C-fp32-channels_last", "D-fp32-nchw",
                        "E-bf16-nchw", "fid-A-fp32-nchw", "fid-C-fp16-nchw", "fid-E1-fp32-nchw",
                        "fid-E2-fp32-channels_last", "googlenet-tv-fp32-nchw", "googlenet-paper-fp32-nchw")
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("kind", list(GRAPH_CASES))
def test_fused_block_matches_fp64_oracle(kind, dtype, layout):
    graph, n, h, w = GRAPH_CASES[kind]
    block, x, out, _ = check_fused(lambda b, x: b(x), graph, n, h, w, dtype=DTYPES[dtype], layout=layout,
                                   backend="triton", bias_shift=0.3)
    assert block.last_backend == "triton"
    assert out.dtype == x.dtype and out.shape[2:] == graph.out_size(h, w)
    assert out.is_contiguous(memory_format=torch.channels_last if layout == "channels_last"
                             else torch.contiguous_format)


@requires_interpreter
@pytest.mark.parametrize("kind", ["A", "fid-E2"])
def test_nan_and_inf_behave_as_pytorch(kind):
    graph, n, h, w = GRAPH_CASES[kind]
    check_fused(lambda b, x: b(x), graph, n, h, w, backend="triton", specials=True)


@pytest.mark.parametrize("kind", ["A", "B", "E"])
def test_state_dict_is_the_reference_blocks(kind):
    graph = GRAPH_CASES[kind][0]
    fused, ref = randomize_(FusedBlock(graph)), ReferenceBlock(graph)
    assert fused.state_dict().keys() == ref.state_dict().keys()
    ref.load_state_dict(fused.state_dict())
    fused2 = FusedBlock(graph)
    fused2.load_state_dict(ref.state_dict())
    x = torch.randn(1, graph.in_channels, 9, 9)
    torch.testing.assert_close(fused2.eval()(x), ref.eval()(x))


@requires_interpreter
def test_from_module_shares_the_units_and_trains_like_the_block():
    graph, n, h, w = GRAPH_CASES["fid-A"]
    source = randomize_(ReferenceBlock(graph))
    twin = randomize_(ReferenceBlock(graph))
    twin.load_state_dict(source.state_dict())
    fused = FusedBlock.from_module(source)
    assert all(a is b for a, b in zip(fused.parameters(), source.parameters()))
    x = make_input(n, graph.in_channels, h, w)
    fused.train(), twin.train()
    torch.testing.assert_close(fused(x), twin(x))  # batch statistics: the block's own forward
    assert fused.last_backend == "reference"
    for a, b in zip(fused.buffers(), twin.buffers()):
        torch.testing.assert_close(a, b)  # running statistics updated alike
    fused.eval(), twin.eval()
    out = fused(x)
    assert fused.last_backend == "triton"
    assert rel_err(out, twin(x)) < tolerance(torch.float32)


@requires_interpreter
@pytest.mark.parametrize("optimizer", ["sgd-foreach", "adam-fused"])
def test_every_forward_uses_the_weights_as_they_are_now(optimizer):
    graph, n, h, w = GRAPH_CASES["E"]
    block = make_block(graph, backend="triton", bias_shift=0.2)
    ref = ReferenceBlock(graph).eval()
    x = make_input(n, graph.in_channels, h, w)
    with torch.no_grad():
        block(x)  # fills the weight cache
    opt = (torch.optim.SGD(block.parameters(), lr=0.5, foreach=True) if optimizer == "sgd-foreach"
           else torch.optim.Adam(block.parameters(), lr=0.05, fused=True))
    block.train()
    block(x).square().mean().backward()  # training mode: BN statistics move too
    opt.step()
    block.eval()
    ref.load_state_dict(block.state_dict())
    with torch.no_grad():
        out = block(x)
        assert block.last_backend == "triton"
        assert rel_err(out, ref(x)) < tolerance(torch.float32)


@requires_interpreter
def test_gradients_reach_every_parameter():
    graph, n, h, w = GRAPH_CASES["C"]
    block = make_block(graph, backend="triton", bias_shift=0.2)
    ref = ReferenceBlock(graph).eval()
    ref.load_state_dict(block.state_dict())
    x = make_input(n, graph.in_channels, h, w).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    g = torch.randn(n, graph.out_channels, *graph.out_size(h, w))
    (block(x) * g).sum().backward()
    assert block.last_backend == "triton"
    (ref(x_ref) * g).sum().backward()
    tol = grad_tolerance(torch.float32)
    assert rel_err(x.grad, x_ref.grad) < tol
    for (name, p), q in zip(block.named_parameters(), ref.parameters()):
        assert rel_err(p.grad, q.grad) < tol, name


@requires_interpreter
def test_hooks_on_a_unit_run_or_raise():
    graph, n, h, w = GRAPH_CASES["B"]
    block = make_block(graph)
    calls = []
    block.branch3x3.register_forward_hook(lambda *a: calls.append(1))
    x = make_input(n, graph.in_channels, h, w)
    with pytest.warns(RuntimeWarning, match="reference path"):
        block(x)
    assert calls and block.last_backend == "reference"
    block.backend = "triton"
    with pytest.raises(RuntimeError, match="bypass"):
        block(x)


def test_backend_cuda_is_refused_with_the_reason():
    graph, n, h, w = GRAPH_CASES["A"]
    block = make_block(graph, backend="cuda")
    with pytest.raises(RuntimeError, match="GoogLeNet's block only"):
        block(make_input(n, graph.in_channels, h, w))


def test_a_replaced_unit_that_no_longer_fits_raises():
    graph, n, h, w = GRAPH_CASES["D"]
    block = make_block(graph, backend="reference")
    block.branch3x3_2.conv = nn.Conv2d(graph.nodes[1].cin, graph.nodes[1].cout, 3, stride=1, bias=False)
    with pytest.raises(NotAnInceptionBlock, match="branch3x3_2"):
        block(make_input(n, graph.in_channels, h, w))


@pytest.mark.parametrize("bad, error, match", [
    (lambda c: torch.randn(1, c + 1, 9, 9), ValueError, "input channels"),
    (lambda c: torch.randn(1, c, 2, 9), ValueError, "too small"),
    (lambda c: torch.ones(1, c, 9, 9, dtype=torch.int64), TypeError, "floating-point"),
    (lambda c: torch.randn(c, 9, 9), ValueError, "4-D"),
], ids=["channels", "too-small", "integer", "3-d"])
def test_bad_input_is_named(bad, error, match):
    graph = GRAPH_CASES["B"][0]
    block = make_block(graph, backend="auto")
    with pytest.raises(error, match=match):
        block(bad(graph.in_channels))


def test_unconvert_gives_back_the_block():
    graph, n, h, w = GRAPH_CASES["E"]
    source = randomize_(ReferenceBlock(graph)).eval()
    model = nn.Sequential(source)
    model, report = fi.convert(model, return_report=True)
    assert isinstance(model[0], FusedBlock) and report.kinds == {"0": "E"}
    back = fi.unconvert(model)
    assert back[0] is source
    fresh = fi.unconvert(nn.Sequential(FusedBlock(graph)))
    assert type(fresh[0]) is ReferenceBlock and fresh[0].graph == graph


def test_meta_and_fp64_inputs_run_the_reference_path():
    graph, n, h, w = GRAPH_CASES["A"]
    block = make_block(graph, dtype=torch.float64)
    out = block(make_input(n, graph.in_channels, h, w, dtype=torch.float64))
    assert block.last_backend == "reference" and out.dtype == torch.float64
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        meta = FusedBlock(graph, device="meta").eval()
        assert meta(torch.empty(n, graph.in_channels, h, w, device="meta")).shape[2:] == graph.out_size(h, w)
