"""Autograd and training through the op and the module: gradcheck in fp64, the fused gradients
against fp64 autograd of the plain block, the recompute backward's memory, training steps,
autocast, BatchNorm in training mode (exactly nn.BatchNorm2d), torch.func transforms; on a GPU
the gradients in each dtype.

On CPU the fused path is the Triton kernel in the interpreter; GPU tests skip without CUDA.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fused_inception import InceptionSpec
from fused_inception.ops import inception_forward
from fused_inception.packing import pack_weights_differentiable
from fused_inception.reference import ReferenceInception

from .helpers import (
    CUDA_SPEC,
    DTYPES,
    grad_tolerance,
    make_block,
    make_input,
    rel_err,
    requires_interpreter,
    tolerance,
)
from .helpers import TINY_PAPER as PAPER
from .helpers import TINY_TV as TV
from .helpers import TINY_VARIANTS as VARIANTS

pytestmark = pytest.mark.usefixtures("default_tiles")


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
    assert rel_err(out, ref_out) < tolerance(torch.float32)
    assert_grads_match(block, x, ref_dx, ref_grads, grad_tolerance(torch.float32))


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
    assert rel_err(x.grad, ref_dx) < grad_tolerance(torch.float32)
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
            assert rel_err(a, b) < tolerance(torch.float32), n
    with torch.no_grad():
        assert rel_err(fused(x), plain(x)) < tolerance(torch.float32)


@requires_interpreter
def test_autocast_training_grads():
    """bf16 autocast on fp32 parameters: the fused op runs in bf16 and gradients reach the fp32
    parameters, as accurate (against fp64) as the plain block's under the same autocast."""
    block = make_block(TV)
    plain = ReferenceInception(TV)
    plain.load_state_dict(block.state_dict())
    plain.eval()
    # x on the bf16 grid: the op casts it to bf16, and two values that round to the same bf16 make
    # a max-pool tie the fp64 reference does not see, sending a whole gradient to another pixel.
    x = make_input(2, 4, 3, 3).bfloat16().float().requires_grad_()
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
        bound = max(2 * rel_err(plain_g, ref_g), grad_tolerance(torch.bfloat16))
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


@pytest.mark.gpu
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
        bound = max(2 * rel_err(plain_g, ref_g), grad_tolerance(dtype, "cuda"))
        assert rel_err(fused_g, ref_g) < bound, (name, rel_err(fused_g, ref_g), rel_err(plain_g, ref_g))
