"""FusedInception as a PyTorch citizen: the registered op, autograd and training, torch.compile,
CUDA graphs, devices and streams, thread safety.

On CPU the fused path is the Triton kernel in the interpreter (slow: about half a second per
launch even for the tiny blocks used here, so launches are counted); GPU tests skip without CUDA.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import sys
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fused_inception as fi
from fused_inception import FusedInception, InceptionSpec
from fused_inception.ops import inception_forward
from fused_inception.packing import PackedWeights, pack_weights, pack_weights_differentiable
from fused_inception.reference import ReferenceInception

from .helpers import (
    CUDA,
    make_block,
    make_input,
    oracle,
    randomize_,
    rel_err,
    requires_cuda,
    requires_interpreter,
    tolerance,
)


def gpu(f):
    """A GPU test: selected by `-m gpu`, skipped without CUDA."""
    return pytest.mark.gpu(requires_cuda(f))


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
LAYOUTS = ("nchw", "channels_last")
# Tiny blocks: the torchvision variant (BN, 3x3 "5x5") and the paper's (bias, no BN, true 5x5).
TV = InceptionSpec(4, 2, 2, 3, 2, 3, 2)
PAPER = InceptionSpec.paper(4, 2, 2, 3, 2, 3, 2)
VARIANTS = {"torchvision": TV, "paper": PAPER}
OP = torch.ops.fused_inception.inception_forward.default
# Gradient tolerance: relative error of each gradient against fp64 autograd of the reference block.
GRAD_TOL = {torch.float32: 1e-5, "tf32": 5e-3, torch.float16: 5e-3, torch.bfloat16: 3e-2}


def grad_tol(dtype: torch.dtype, device: str = "cpu") -> float:
    if dtype == torch.float32 and device == "cuda" and torch.backends.cudnn.allow_tf32:
        return GRAD_TOL["tf32"]
    return GRAD_TOL[dtype]


def op_args(block: FusedInception, x: torch.Tensor, impl: str, packed=None) -> tuple:
    s = block.spec
    packed = packed if packed is not None else block.packed_weights(x.dtype)
    return (x, *packed, list(s.channels), s.k3, s.k5, s.relu, impl)


def reference_grads(block: nn.Module, x: torch.Tensor, grad_out: torch.Tensor):
    """fp64 CPU autograd of the plain-PyTorch block with ``block``'s state: (out, dx, {name: grad})."""
    ref = ReferenceInception(block.spec).double()
    ref.load_state_dict({k: v.detach().double().cpu() for k, v in block.state_dict().items()})
    ref.train(block.training)
    xr = x.detach().double().cpu().requires_grad_()
    out = ref(xr)
    out.backward(grad_out.double().cpu())
    return out, xr.grad, {n: p.grad for n, p in ref.named_parameters()}


def assert_grads_match(block: nn.Module, x: torch.Tensor, ref_dx, ref_grads, tol: float) -> None:
    assert rel_err(x.grad, ref_dx) < tol, f"dx: relative error {rel_err(x.grad, ref_dx):.3g}"
    names = [n for n, _ in block.named_parameters()]
    assert sorted(names) == sorted(ref_grads)
    for n, p in block.named_parameters():
        assert p.grad is not None, f"no gradient for {n}"
        err = rel_err(p.grad, ref_grads[n])
        assert err < tol, f"{n}: relative error {err:.3g}"


# -- the registered op -------------------------------------------------------------------------
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
    with pytest.raises(ValueError, match=r"expected x of shape \(N, 4, H, W\)"):
        inception_forward(make_input(1, 5, 3, 3), *args[1:])


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("dt", list(DTYPES))
def test_differentiable_folding_equals_pack_weights(variant, dt):
    """The folding used for gradients and under torch.compile gives the very bits of the cached,
    torch.nn.utils.fusion-based packing."""
    block = make_block(VARIANTS[variant])
    got = pack_weights_differentiable(block._parts.tensors(), DTYPES[dt])
    want = pack_weights(block._parts.tensors(), DTYPES[dt])
    for name, g, w in zip(PackedWeights._fields, got, want):
        assert g.dtype == w.dtype and g.is_contiguous(), name
        assert torch.equal(g, w), name


def test_op_gradcheck_fp64():
    """The op's autograd formula (recompute + vjp) against finite differences, w.r.t. x and every
    packed tensor (impl="reference": the op's semantics in PyTorch ops, in float64); and the
    backward's own derivative (double backward)."""
    block = make_block(PAPER, dtype=torch.float64)
    x = make_input(1, 4, 3, 3, dtype=torch.float64).requires_grad_()
    packed = [t.detach().double().requires_grad_() for t in block.packed_weights(torch.float64)]
    s = block.spec

    def f(x, *p):
        return inception_forward(x, *p, list(s.channels), s.k3, s.k5, s.relu, "reference")

    assert torch.autograd.gradcheck(f, (x, *packed))
    assert torch.autograd.gradgradcheck(f, (x, *packed), fast_mode=True)  # the backward is differentiable


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradcheck_through_folding_fp64(variant):
    """The whole chain the module uses: raw parameters (conv weights/biases, BN affine) -> folding
    -> op -> output, against finite differences."""
    block = make_block(VARIANTS[variant], dtype=torch.float64)
    units = block._parts.tensors()
    fields = [(i, f) for i, u in enumerate(units) for f in ("weight", "bias", "bn_weight", "bn_bias")
              if isinstance(getattr(u, f), nn.Parameter)]
    assert len(fields) == (6 * 3 if variant == "torchvision" else 6 * 2)  # weight (+bias) (+bn w, b)
    s = block.spec
    x = make_input(1, 4, 3, 3, dtype=torch.float64).requires_grad_()

    def f(x, *params):
        us = list(units)
        for (i, name), p in zip(fields, params):
            us[i] = dataclasses.replace(us[i], **{name: p})
        packed = pack_weights_differentiable(tuple(us), torch.float64)
        return inception_forward(x, *packed, list(s.channels), s.k3, s.k5, s.relu, "reference")

    params = [getattr(units[i], name).detach().clone().requires_grad_() for i, name in fields]
    assert torch.autograd.gradcheck(f, (x, *params), fast_mode=True)


# -- autograd and training through the module ----------------------------------------------------
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_module_gradcheck_reference_backend_fp64(mode):
    block = make_block(TV, dtype=torch.float64, backend="reference").train(mode == "train")
    names, params = zip(*block.named_parameters())
    x = make_input(2, 4, 3, 3, dtype=torch.float64).requires_grad_()

    def f(x, *p):
        return torch.func.functional_call(block, dict(zip(names, p)), (x,))

    assert torch.autograd.gradcheck(f, (x, *[p.detach().clone().requires_grad_() for p in params]), fast_mode=True)


@requires_interpreter
@pytest.mark.parametrize("variant,mode", [("torchvision", "eval"), ("paper", "train"), ("paper", "eval")])
def test_fused_grads_match_reference(variant, mode):
    """Gradients w.r.t. x and every parameter (BN affine included, through the folding) of the
    fused path, against fp64 autograd of the plain-PyTorch block."""
    block = make_block(VARIANTS[variant]).train(mode == "train")
    x = make_input(2, 4, 3, 3).requires_grad_()
    out = block(x)
    assert block.last_backend == "triton" and out.grad_fn is not None
    g = torch.randn_like(out)
    out.backward(g)
    ref_out, ref_dx, ref_grads = reference_grads(block, x, g)
    assert rel_err(out, ref_out) < 1e-5
    assert_grads_match(block, x, ref_dx, ref_grads, grad_tol(torch.float32))


def saved_activation_bytes(fn, weights) -> int:
    """Bytes of the distinct storages autograd saves while ``fn`` runs, other than ``weights``'."""
    exclude = {t.untyped_storage().data_ptr() for t in weights}
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in exclude:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


@requires_interpreter
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_backward_keeps_only_the_input(variant):
    """The memory win of the recompute backward: of the activations, autograd keeps x alone
    (the plain block keeps every intermediate map, the pool output and its int64 indices).
    Measured as the growth from batch 2 to batch 4, which leaves out what the weight folding
    saves (the same for every batch)."""
    block = make_block(VARIANTS[variant])
    plain = ReferenceInception(block.spec).eval()
    weights = [*block.parameters(), *block.buffers()]
    xs = [make_input(n, 4, 5, 5).requires_grad_() for n in (2, 4)]
    fused = [saved_activation_bytes(lambda x=x: block(x), weights) for x in xs]
    assert block.last_backend == "triton"
    assert fused[1] - fused[0] == xs[1].untyped_storage().nbytes() - xs[0].untyped_storage().nbytes()
    plain_bytes = [saved_activation_bytes(lambda x=x: plain(x), [*plain.parameters(), *plain.buffers()]) for x in xs]
    assert plain_bytes[1] - plain_bytes[0] > 4 * (fused[1] - fused[0])


@requires_interpreter
def test_frozen_parameters_give_input_grad_only():
    block = make_block(TV).requires_grad_(False)
    x = make_input(1, 4, 3, 3).requires_grad_()
    out = block(x)
    g = torch.randn_like(out)
    out.backward(g)
    _, ref_dx, _ = reference_grads(block, x, g)
    assert rel_err(x.grad, ref_dx) < grad_tol(torch.float32)
    assert all(p.grad is None for p in block.parameters())


@requires_interpreter
def test_no_grad_and_no_requires_grad_keep_no_graph():
    block = make_block(TV)
    x = make_input(1, 4, 3, 3)
    with torch.no_grad():
        out = block(x.requires_grad_())
    assert out.grad_fn is None and not out.requires_grad
    x = make_input(1, 4, 3, 3)
    block.requires_grad_(False)
    out = block(x)  # grad mode on, but nothing requires grad
    assert out.grad_fn is None and not out.requires_grad
    assert block.last_backend == "triton"


def test_batchnorm_training_is_exactly_batchnorm2d():
    """BN in training mode: the reference path with the module's own BatchNorm2d, so outputs,
    gradients, batch statistics and running-statistic updates are bit-identical to the plain block."""
    block = make_block(TV).train()
    for bn in block._parts.batch_norms()[::2]:
        bn.momentum = None  # cumulative average as well as the default momentum
    plain = copy.deepcopy(ReferenceInception(TV))
    plain.load_state_dict(block.state_dict())
    for bn_a, bn_b in zip(block._parts.batch_norms(), (m for m in plain.modules() if isinstance(m, nn.BatchNorm2d))):
        bn_b.momentum = bn_a.momentum
    plain.train()
    for _ in range(2):
        x = make_input(3, 4, 5, 5)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_a, out_b = block(xa), plain(xb)
        assert block.last_backend == "reference"
        assert torch.equal(out_a, out_b)
        g = torch.randn_like(out_a)
        out_a.backward(g)
        out_b.backward(g)
        assert torch.equal(xa.grad, xb.grad)
    for (na, a), (nb, b) in zip(block.state_dict().items(), plain.state_dict().items()):
        assert na == nb and torch.equal(a, b), na
    for (na, a), (_, b) in zip(block.named_parameters(), plain.named_parameters()):
        assert torch.equal(a.grad, b.grad), na


@requires_interpreter
def test_training_steps_follow_reference():
    """SGD steps: the in-place updates invalidate the packed-weight cache, so every step's forward
    and gradients track the plain block (paper variant: fused in training mode)."""
    fused = make_block(PAPER).train()
    plain = ReferenceInception(PAPER)
    plain.load_state_dict(fused.state_dict())
    opt_f = torch.optim.SGD(fused.parameters(), lr=0.1, momentum=0.9)
    opt_p = torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9)
    x = make_input(2, 4, 3, 3)
    target = torch.randn(2, PAPER.out_channels, 3, 3)
    for _ in range(3):
        for model, opt in ((fused, opt_f), (plain, opt_p)):
            opt.zero_grad()
            F.mse_loss(model(x), target).backward()
            opt.step()
        assert fused.last_backend == "triton"
        for (n, a), (_, b) in zip(fused.named_parameters(), plain.named_parameters()):
            assert rel_err(a, b) < 1e-5, n
    with torch.no_grad():
        assert rel_err(fused(x), plain(x)) < 1e-5


@requires_interpreter
def test_autocast_training_grads():
    """bf16 autocast on fp32 parameters: the fused op runs in bf16 and gradients reach the fp32
    parameters, as accurate (against fp64) as the plain block's under the same autocast."""
    block = make_block(TV)
    plain = ReferenceInception(TV)
    plain.load_state_dict(block.state_dict())
    plain.eval()
    x = make_input(2, 4, 3, 3).requires_grad_()
    xp = x.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, out_plain = block(x), plain(xp)
    assert out.dtype == torch.bfloat16 and block.last_backend == "triton"
    g = torch.randn_like(out)
    out.backward(g)
    out_plain.backward(g)
    assert x.grad.dtype == torch.float32 and all(p.grad.dtype == torch.float32 for p in block.parameters())
    _, ref_dx, ref_grads = reference_grads(block, x, g.float())
    pairs = [("x", x.grad, xp.grad, ref_dx)] + [
        (n, p.grad, q.grad, ref_grads[n]) for (n, p), (_, q) in zip(block.named_parameters(), plain.named_parameters())]
    for name, fused_g, plain_g, ref_g in pairs:
        bound = max(2 * rel_err(plain_g, ref_g), grad_tol(torch.bfloat16))
        assert rel_err(fused_g, ref_g) < bound, (name, rel_err(fused_g, ref_g), rel_err(plain_g, ref_g))


@requires_interpreter
def test_inference_mode_then_training():
    """Weights packed under inference_mode are ordinary tensors: autograd may save them later."""
    block = make_block(PAPER)
    x = make_input(1, 4, 3, 3)
    with torch.inference_mode():
        block(x)
    x.requires_grad_()
    block(x).sum().backward()
    assert x.grad is not None and block.branch1.conv.weight.grad is not None


def test_torch_func_transforms_run_the_reference_path():
    """Custom ops with registered autograd do not run under torch.func transforms, so "auto" takes
    the reference path there (and says so); an explicit fused backend is a clear error."""
    block = make_block(TV)
    x = make_input(2, 4, 3, 3)
    params = {k: v.detach() for k, v in block.named_parameters()}
    grads = torch.func.grad(lambda p: torch.func.functional_call(block, p, (x,)).square().sum())(params)
    assert block.last_backend == "reference"
    block.backend = "reference"
    block(x).square().sum().backward()
    for n, p in block.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, msg=n)
    per_sample = torch.vmap(lambda xi: torch.func.functional_call(block, params, (xi[None],)))(x)
    torch.testing.assert_close(per_sample[:, 0], block(x))
    block.backend = "triton"
    with pytest.raises(RuntimeError, match="cannot run inside a torch.func transform"):
        torch.func.grad(lambda p: torch.func.functional_call(block, p, (x,)).sum())(params)


@requires_interpreter
def test_last_backend_names_the_path_that_ran():
    tv, paper = make_block(TV), make_block(PAPER)
    x = make_input(2, 4, 3, 3)
    for block, mode, want in ((tv, "train", "reference"), (tv, "eval", "triton"), (paper, "train", "triton")):
        block.train(mode == "train")
        block(x)
        assert block.last_backend == want, (block.spec, mode)


# -- torch.compile -------------------------------------------------------------------------------
def _swap_to_reference_impl(graphs: list):
    """A Dynamo backend for the whole-network tests: records how many fused ops the captured graph
    holds, then runs it through AOTAutograd with the ops' impl set to "reference" (the op's
    semantics in PyTorch ops), because the interpreter needs about 45 s per GoogLeNet forward."""
    from torch._dynamo.backends.registry import lookup_backend

    def backend(gm: torch.fx.GraphModule, example_inputs):
        n = 0
        for node in gm.graph.nodes:
            if node.op == "call_function" and node.target is OP:
                assert node.args[-1] in ("triton", "cuda")
                node.args = (*node.args[:-1], "reference")
                n += 1
        gm.recompile()
        graphs.append(n)
        return lookup_backend("aot_eager")(gm, example_inputs)

    return backend


@requires_interpreter
def test_compile_block_inductor_runs_the_interpreter():
    """Default torch.compile (Inductor), no graph break: the op is an extern kernel that runs the
    Triton kernel in the interpreter; BN folding is compiled into the graph."""
    torch._dynamo.reset()
    block = make_block(TV)
    x = make_input(1, 4, 3, 3)
    with torch.no_grad():
        want = block(x)
        block.last_backend = None
        got = torch.compile(block, fullgraph=True)(x)
    assert block.last_backend == "triton"
    assert rel_err(got, want) < 1e-6


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
        assert rel_err(b, a) < 1e-5


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


@requires_interpreter
@pytest.mark.parametrize("variant", ["torchvision", "paper"])
def test_compile_googlenet_fullgraph_fused(variant):
    """A converted GoogLeNet in one graph holding the nine fused ops (run with impl="reference",
    see _swap_to_reference_impl); matches the eager unconverted network."""
    torch._dynamo.reset()
    net = randomize_(fi.models.googlenet(variant, num_classes=10)).eval()
    fused = fi.convert(copy.deepcopy(net))
    x = torch.randn(2, 3, 32, 32)
    graphs: list[int] = []
    with torch.no_grad():
        got = torch.compile(fused, fullgraph=True, backend=_swap_to_reference_impl(graphs))(x)
        want = net(x)
    assert graphs == [9]
    assert {m.last_backend for m in fused.modules() if isinstance(m, FusedInception)} == {"triton"}
    assert rel_err(got, want) < 1e-5


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


# -- thread safety and the hot path ---------------------------------------------------------------
def test_packed_weights_cache_is_consistent_across_threads():
    """Threads asking for different dtypes thrash the cache; each must get its own dtype's weights."""
    block = make_block(TV)
    want = {dt: pack_weights(block._parts.tensors(), dt) for dt in DTYPES.values()}
    errors: list[str] = []

    def worker(dtype):
        for _ in range(200):
            got = block.packed_weights(dtype)
            if not all(torch.equal(g, w) for g, w in zip(got, want[dtype])):
                errors.append(f"wrong packed weights for {dtype}")
                return

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=worker, args=(dt,)) for dt in [*DTYPES.values()] * 2]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors[:3]


@requires_interpreter
def test_concurrent_forwards_match_serial():
    block = make_block(TV)
    xs = [make_input(1, 4, 3, 3) for _ in range(3)]
    with torch.no_grad():
        want = [block(x) for x in xs]
    got: list = [None] * len(xs)

    def worker(i):
        with torch.no_grad():
            got[i] = block(xs[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, w in zip(got, want):
        assert g is not None and torch.equal(g, w)


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


# -- GPU: CUDA graphs, compile, grads, devices and streams ----------------------------------------
CUDA_SPEC = InceptionSpec(64, 32, 48, 64, 16, 32, 32)


@pytest.fixture(autouse=True)
def _default_tiles(monkeypatch):
    # These tests are about integration, not tile choice: skip autotuning (a compile per candidate).
    monkeypatch.setenv("FUSED_INCEPTION_AUTOTUNE", "0")


@gpu
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


@gpu
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


@gpu
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


@gpu
@pytest.mark.parametrize("dt", list(DTYPES))
@pytest.mark.parametrize("variant", ["torchvision", "paper"])
def test_cuda_grads_match_reference(variant, dt):
    """Gradients of x and every parameter against fp64 autograd: within the dtype's tolerance, or
    at worst twice the error of the plain PyTorch block in the same dtype on the same device."""
    dtype = DTYPES[dt]
    spec = InceptionSpec(*CUDA_SPEC.channels, k3=3, k5=5 if variant == "paper" else 3,
                         bias=variant == "paper", batch_norm=variant != "paper")
    block = make_block(spec, dtype=dtype, device="cuda")
    plain = ReferenceInception(spec).to(device="cuda", dtype=dtype).eval()
    plain.load_state_dict(block.state_dict())
    x = make_input(2, 64, 14, 14, dtype=dtype, device="cuda", layout="channels_last").requires_grad_()
    xp = x.detach().clone().requires_grad_()
    out = block(x)
    assert block.last_backend == "triton"
    g = torch.randn_like(out)
    out.backward(g)
    plain(xp).backward(g)
    _, ref_dx, ref_grads = reference_grads(block, x, g)
    pairs = [("x", x.grad, xp.grad, ref_dx)] + [
        (n, p.grad, q.grad, ref_grads[n]) for (n, p), (_, q) in zip(block.named_parameters(), plain.named_parameters())]
    for name, fused_g, plain_g, ref_g in pairs:
        bound = max(2 * rel_err(plain_g, ref_g), grad_tol(dtype, "cuda"))
        assert rel_err(fused_g, ref_g) < bound, (name, rel_err(fused_g, ref_g), rel_err(plain_g, ref_g))


@gpu
def test_launches_on_the_current_stream():
    """The side stream sleeps, then writes x: a kernel launched on any other stream would read
    the stale (zero) input."""
    block = make_block(CUDA_SPEC, device="cuda")
    src = make_input(2, 64, 14, 14, device="cuda")
    x = torch.zeros_like(src)
    with torch.no_grad():
        block(x)  # warm-up (compile, cache)
        torch.cuda.synchronize()
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            torch.cuda._sleep(200_000_000)
            x.copy_(src)
            out = block(x)
        side.synchronize()
    assert rel_err(out, oracle(block, src)) < tolerance(torch.float32, "cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA or torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_runs_on_a_non_default_device():
    block = make_block(CUDA_SPEC, device="cuda:1")
    x = make_input(2, 64, 14, 14, device="cuda:1")
    assert torch.cuda.current_device() == 0
    with torch.no_grad():
        out = block(x)
    assert out.device == torch.device("cuda:1") and block.last_backend == "triton"
    assert rel_err(out, oracle(block, x)) < tolerance(torch.float32, "cuda")
    xg = x.clone().requires_grad_()
    block(xg).sum().backward()
    assert xg.grad.device == x.device
