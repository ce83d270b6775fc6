"""FusedInception's public contract: construction, state_dicts, backends, bad input."""

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from fused_inception import FusedInception, InceptionSpec, NotAnInceptionBlock, googlenet_spec
from fused_inception.reference import ReferenceInception

from .helpers import TV_KEYS, make_block, make_input, oracle, randomize_, rel_err, requires_interpreter, tolerance

SMALL = InceptionSpec(6, 3, 4, 5, 2, 3, 2)


def test_default_is_torchvision_block_with_its_keys():
    block = FusedInception(192, 64, 96, 128, 16, 32, 32)
    assert block.spec == googlenet_spec("3a", "torchvision")
    assert set(block.state_dict()) == TV_KEYS


@pytest.mark.parametrize("variant", ["paper", "torchvision"])
def test_state_dict_loads_both_ways(variant):
    spec = googlenet_spec("4a", variant)
    ref = randomize_(ReferenceInception(spec)).eval()
    fused = FusedInception.from_spec(spec, backend="reference").eval()
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(1, spec.in_channels, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), ref(x))
    back = ReferenceInception(spec)
    back.load_state_dict(fused.state_dict())
    for k, v in ref.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


def test_from_module_keeps_parameters_dtype_and_mode():
    ref = randomize_(ReferenceInception(SMALL)).to(torch.float64).train()
    fused = FusedInception.from_module(ref)
    assert fused.training
    assert fused.branch2[1].conv.weight is ref.branch2[1].conv.weight
    assert fused.branch1.conv.weight.dtype == torch.float64
    assert fused.spec == SMALL


def test_from_module_names_the_part_that_does_not_fit():
    ref = ReferenceInception(SMALL)
    ref.branch2[1].conv.stride = (2, 2)
    with pytest.raises(NotAnInceptionBlock, match=r"branch2\.1.*stride"):
        FusedInception.from_module(ref)
    with pytest.raises(NotAnInceptionBlock, match="expected 4 branches"):
        FusedInception.from_module(nn.Sequential(nn.Conv2d(3, 3, 1)))


def test_reference_backend_and_last_backend():
    block = make_block(SMALL, backend="reference")
    assert block.last_backend is None
    x = make_input(2, 6, 5, 4)
    out = block(x)
    assert block.last_backend == "reference"
    assert rel_err(out, oracle(block, x)) < tolerance(torch.float32)


@requires_interpreter
def test_auto_runs_triton_in_the_interpreter_and_env_overrides(monkeypatch):
    block = make_block(SMALL)
    x = make_input(1, 6, 4, 4)
    block(x)
    assert block.last_backend == "triton"
    monkeypatch.setenv("FUSED_INCEPTION_BACKEND", "reference")
    block(x)
    assert block.last_backend == "reference"
    monkeypatch.setenv("FUSED_INCEPTION_BACKEND", "fastest")
    with pytest.raises(ValueError, match="FUSED_INCEPTION_BACKEND"):
        block(x)


def test_training_with_batchnorm_runs_reference_with_batch_statistics():
    block = make_block(SMALL).train()
    ref = ReferenceInception(SMALL)
    ref.load_state_dict(block.state_dict())
    ref.train()
    x = make_input(3, 6, 5, 5)
    torch.testing.assert_close(block(x), ref(x))
    assert block.last_backend == "reference"
    torch.testing.assert_close(block.branch1.bn.running_mean, ref.branch1.bn.running_mean)


def test_triton_backend_without_gpu_or_interpreter_is_a_clear_error():
    code = ("import torch, fused_inception as fi\n"
            "b = fi.FusedInception(6, 3, 4, 5, 2, 3, 2, backend='triton').eval()\n"
            "try:\n    b(torch.randn(1, 6, 4, 4))\nexcept RuntimeError as e:\n    print('ERR', e)\n")
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "ERR backend='triton' needs a CUDA tensor" in out.stdout, out.stderr


def test_bad_backend_name():
    with pytest.raises(ValueError, match="backend must be one of"):
        FusedInception(6, 3, 4, 5, 2, 3, 2, backend="tensorrt")


@pytest.mark.parametrize("bad,err,match", [
    (lambda: torch.randn(6, 4, 4), ValueError, "4-D input"),
    (lambda: torch.randn(1, 5, 4, 4), ValueError, "expects 6 input channels, got 5"),
    (lambda: torch.randint(0, 3, (1, 6, 4, 4)), TypeError, "floating-point input"),
    (lambda: torch.randn(1, 6, 4, 4, dtype=torch.complex64), TypeError, "floating-point input"),
    (lambda: torch.randn(1, 6, 4, 4, dtype=torch.float16), TypeError, "does not match the block's parameter dtype"),
    (lambda: torch.randn(1, 6, 4, 4, device="meta"), ValueError, "is on meta but the block's parameters are on cpu"),
    (lambda: torch.randn(1, 6, 0, 4), ValueError, "H and W >= 1"),
    (lambda: [[1.0]], TypeError, "expects a torch.Tensor"),
], ids=["3d", "channels", "int", "complex", "dtype-mismatch", "device-mismatch", "zero-height", "not-tensor"])
def test_bad_input(bad, err, match):
    block = make_block(SMALL)
    with pytest.raises(err, match=match):
        block(bad())


@pytest.mark.parametrize("backend", ["reference", pytest.param("auto", marks=requires_interpreter)])
def test_empty_batch(backend):
    block = make_block(SMALL, backend=backend)
    out = block(make_input(0, 6, 5, 7))
    assert out.shape == (0, SMALL.out_channels, 5, 7)


def test_autocast_behaves_like_conv():
    block = make_block(SMALL, backend="reference")
    x = make_input(1, 6, 5, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = block(x)
        conv_out = nn.Conv2d(6, 2, 1)(x)
    assert out.dtype == conv_out.dtype == torch.bfloat16
    assert rel_err(out, oracle(block, x)) < tolerance(torch.bfloat16)


def test_meta_device_propagates_shapes_like_the_reference():
    block = FusedInception(6, 3, 4, 5, 2, 3, 2, device="meta")
    out = block(torch.empty(2, 6, 5, 7, device="meta"))
    want = ReferenceInception(SMALL, device="meta")(torch.empty(2, 6, 5, 7, device="meta"))
    assert out.is_meta and out.shape == want.shape == (2, 13, 5, 7)
    assert block.last_backend == "reference"


def _layouts():
    cl = make_input(2, 6, 5, 8, layout="channels_last")
    return {
        "nchw": (make_input(2, 6, 5, 4), torch.contiguous_format),
        "channels_last": (make_input(2, 6, 5, 4, layout="channels_last"), torch.channels_last),
        "channels_last-sliced-w": (cl[..., ::2], torch.channels_last),
        "channels_last-sliced-h": (cl[:, :, 1:4], torch.channels_last),
        "nchw-sliced": (make_input(2, 6, 5, 4, layout="sliced"), torch.contiguous_format),
    }


@pytest.mark.parametrize("layout", list(_layouts()))
@pytest.mark.parametrize("backend", ["reference", pytest.param("auto", marks=requires_interpreter)])
def test_output_memory_format_rule(backend, layout):
    """channels_last out exactly when the input's channel stride is its smallest, on every backend."""
    x, fmt = _layouts()[layout]
    block = make_block(SMALL, backend=backend)
    with torch.no_grad():
        out = block(x)
    assert out.is_contiguous(memory_format=fmt)
    assert rel_err(out, oracle(block, x)) < tolerance(torch.float32)


def test_from_module_refuses_submodule_hooks():
    ref = randomize_(ReferenceInception(SMALL))
    ref.branch3[1].conv.register_forward_hook(lambda *a: None)
    with pytest.raises(ValueError, match=r"branch3\.1\.conv has forward hooks"):
        FusedInception.from_module(ref)
