"""torch.compile (fullgraph, dynamic shapes, training, whole GoogLeNets) and CUDA graphs (captured
by hand and by Inductor's reduce-overhead mode).

On CPU the fused path is the Triton kernel in the interpreter; GPU tests skip without CUDA.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import fused_inception as fi
from fused_inception import FusedInception

from .helpers import (
    CUDA_SPEC,
    DTYPES,
    GRAPH_CASES,
    make_block,
    make_input,
    oracle,
    randomize_,
    rel_err,
    requires_interpreter,
    tolerance,
)
from .helpers import TINY_PAPER as PAPER
from .helpers import TINY_TV as TV
from .helpers import TINY_VARIANTS as VARIANTS

pytestmark = pytest.mark.usefixtures("default_tiles")
OPS = (torch.ops.fused_inception.inception_forward.default, torch.ops.fused_inception.block_forward.default)


def _swap_to_reference_impl(graphs: list):
    """A Dynamo backend for the whole-network tests: records the impl each fused op of the captured
    graph asks for (one list per graph), then runs the graph through AOTAutograd with every op's
    impl set to "reference" (the op's semantics in PyTorch ops), because the interpreter needs
    about 45 s per GoogLeNet forward."""
    from torch._dynamo.backends.registry import lookup_backend

    def backend(gm: torch.fx.GraphModule, example_inputs):
        impls = []
        for node in gm.graph.nodes:
            if node.op == "call_function" and node.target in OPS:
                impls.append(node.args[-1])
                node.args = (*node.args[:-1], "reference")
        gm.recompile()
        graphs.append(impls)
        return lookup_backend("aot_eager")(gm, example_inputs)

    return backend


@requires_interpreter
@pytest.mark.parametrize("variant,mode", [("torchvision", "eval"), ("paper", "train")])
def test_compile_training_grads(variant, mode):
    """Under torch.compile the registered autograd (recompute backward) and the traced folding
    give the eager gradients for x and every parameter."""
    torch._dynamo.reset()
    block = make_block(VARIANTS[variant]).train(mode == "train")
    x = make_input(2, 4, 3, 3)
    g = torch.randn(2, block.spec.out_channels, 3, 3)
    grads = []
    for fn in (block, torch.compile(block, fullgraph=True, backend="aot_eager")):
        block.zero_grad()
        xg = x.clone().requires_grad_()
        fn(xg).backward(g)
        grads.append([xg.grad] + [p.grad.clone() for p in block.parameters()])
        assert block.last_backend == "triton"
    for a, b in zip(*grads):
        assert rel_err(b, a) < tolerance(torch.float32)


@requires_interpreter
def test_compile_dynamic_batch_compiles_once():
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    block = make_block(PAPER)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(block, fullgraph=True, dynamic=True, backend=counter)
    with torch.no_grad():
        for n in (2, 3):  # (batch 1 is specialised by Dynamo, as for any model)
            x = make_input(n, 4, 3, 3)
            assert rel_err(compiled(x), block(x)) < 1e-6
    assert counter.frame_count == 1


# network id -> (a randomly initialised eval model, its input, the number of fused blocks)
NETWORKS = {
    "googlenet-torchvision": (lambda: fi.models.googlenet("torchvision", num_classes=10), (2, 3, 32, 32), 9),
    "googlenet-paper": (lambda: fi.models.googlenet("paper", num_classes=10), (2, 3, 32, 32), 9),
    "inception_v3": (lambda: fi.models.inception_v3(aux_logits=False), (1, 3, 75, 75), 11),
    "fid": (lambda: fi.models.fid_inception_v3().inception, (1, 3, 75, 75), 11),
}


@requires_interpreter
@pytest.mark.fast_cases("googlenet-torchvision", "googlenet-paper", "fid")
@pytest.mark.parametrize("network", list(NETWORKS))
def test_compile_network_fullgraph_fused(network):
    """A converted network in one graph holding all its fused ops (run with impl="reference", see
    _swap_to_reference_impl); matches the eager unconverted network."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    build, shape, blocks = NETWORKS[network]
    net = randomize_(build()).eval()
    fused = fi.convert(copy.deepcopy(net))
    x = torch.randn(shape)
    graphs: list[list[str]] = []
    with torch.no_grad():
        got = torch.compile(fused, fullgraph=True, backend=_swap_to_reference_impl(graphs))(x)
        want = net(x)
    # One graph whose ops all ask for the Triton kernel. What ran is their reference impl (the
    # swap above), so last_backend, which the modules set while Dynamo traced them, is not checked.
    assert graphs == [["triton"] * blocks]
    assert rel_err(got, want) < tolerance(torch.float32)


@requires_interpreter
@pytest.mark.parametrize("kind", ["googlenet-tv", "B", "fid-E2"])
def test_compile_block_inductor_runs_the_interpreter(kind):
    """Default torch.compile (Inductor), no graph break: the op is an extern kernel that runs the
    Triton kernel in the interpreter (the graph op's fake implementation gives the stride-2 output
    shape); BN folding is compiled into the graph. GoogLeNet's case is a FusedInception."""
    torch._dynamo.reset()
    graph, n, h, w = GRAPH_CASES[kind]
    block = make_block(TV if kind == "googlenet-tv" else graph, bias_shift=0.2)
    x = make_input(n, block.graph.in_channels, h, w)
    with torch.no_grad():
        want = block(x)
        block.last_backend = None
        got = torch.compile(block, fullgraph=True)(x)
    assert block.last_backend == "triton"
    assert rel_err(got, want) < 1e-6


@pytest.mark.parametrize("variant", ["torchvision", "paper"])
def test_compile_googlenet_fullgraph_reference_backend(variant):
    torch._dynamo.reset()
    net = randomize_(fi.models.googlenet(variant, num_classes=10)).eval()
    ref = fi.convert(copy.deepcopy(net), backend="reference")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got = torch.compile(ref, fullgraph=True, backend="aot_eager")(x)
        want = net(x)
    assert {m.last_backend for m in ref.modules() if isinstance(m, FusedInception)} == {"reference"}
    assert rel_err(got, want) < 1e-6


def test_compile_batchnorm_training_updates_running_stats():
    torch._dynamo.reset()
    model = nn.Sequential(nn.Conv2d(3, 4, 1), FusedInception.from_spec(TV), nn.Flatten(), nn.LazyLinear(3))
    model(torch.randn(2, 3, 4, 4))  # materialise the lazy layer
    randomize_(model).train()
    twin = copy.deepcopy(model)
    compiled = torch.compile(twin, fullgraph=True, backend="aot_eager")
    for _ in range(2):
        x = torch.randn(3, 3, 4, 4)
        torch.testing.assert_close(compiled(x), model(x))
    for (n, a), (_, b) in zip(model.state_dict().items(), twin.state_dict().items()):
        torch.testing.assert_close(b, a, msg=n)
    assert twin[1].last_backend == "reference"


@pytest.mark.gpu
@pytest.mark.parametrize("dt", list(DTYPES))
def test_cuda_graph_capture_and_replay(dt):
    dtype = DTYPES[dt]
    block = make_block(CUDA_SPEC, dtype=dtype, device="cuda")
    static_x = make_input(2, 64, 14, 14, dtype=dtype, device="cuda", layout="channels_last")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.no_grad():
        for _ in range(3):  # warm-up: Triton compile, packed-weight cache
            block(static_x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        static_out = block(static_x)
    for _ in range(2):
        x = make_input(2, 64, 14, 14, dtype=dtype, device="cuda")
        static_x.copy_(x)
        graph.replay()
        torch.cuda.synchronize()
        assert rel_err(static_out, oracle(block, x)) < tolerance(dtype, "cuda")


@pytest.mark.gpu
def test_compile_reduce_overhead():
    """Inductor's CUDA graphs (not skipped: the fused op is capture-safe), replayed on new inputs."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    block = make_block(CUDA_SPEC, dtype=torch.float16, device="cuda")
    compiled = torch.compile(block, mode="reduce-overhead", fullgraph=True)
    with torch.no_grad():
        for _ in range(4):  # warm-up runs, then recorded and replayed CUDA graphs
            x = make_input(2, 64, 14, 14, dtype=torch.float16, device="cuda")
            out = compiled(x).clone()
            assert rel_err(out, oracle(block, x)) < tolerance(torch.float16, "cuda")
    assert counters["inductor"]["cudagraph_skips"] == 0


@pytest.fixture
def no_tf32():
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["torchvision", "paper"])
def test_compile_googlenet_cuda(variant, no_tf32):
    """Inductor, fullgraph, dynamic batch, full fp32 (TF32 off, so the check can be tight)."""
    torch._dynamo.reset()
    net = randomize_(fi.models.googlenet(variant, num_classes=10)).cuda().eval()
    plain = copy.deepcopy(net)
    fused = fi.convert(net)
    compiled = torch.compile(fused, fullgraph=True, dynamic=True)
    with torch.no_grad():
        for n in (2, 3):
            x = torch.randn(n, 3, 224, 224, device="cuda")
            assert rel_err(compiled(x), plain(x)) < 1e-4
    assert {m.last_backend for m in fused.modules() if isinstance(m, FusedInception)} == {"triton"}
