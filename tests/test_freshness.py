"""A forward computes with the parameters, buffers and submodules as they are now.

Each case fills the packed-weight cache with an inference forward, changes the block through one
ordinary path, and checks the next fused forward against the fp64 oracle built from the block's
current state. Several of these paths change values without bumping ``_version`` (fused
optimizers, BatchNorm's running-stat update, ``.data``), which a version-keyed cache misses.
"""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
from torch import nn

import fused_inception as fi
from fused_inception import FusedInception, InceptionSpec, NotAnInceptionBlock

from .helpers import make_block, make_input, oracle, randomize_, rel_err, requires_interpreter, tolerance

pytestmark = requires_interpreter  # the fused path runs in Triton's interpreter

TV = InceptionSpec(6, 3, 4, 5, 2, 3, 2)
PAPER = InceptionSpec.paper(6, 3, 4, 5, 2, 3, 2)


def fused_matches_oracle(block: nn.Module, x: torch.Tensor, dtype=torch.float32) -> None:
    with torch.no_grad():
        out = block(x)
    assert block.last_backend == "triton"
    assert rel_err(out, oracle(block, x)) < tolerance(dtype)


def _train_step(block: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor) -> None:
    block(x).square().mean().backward()  # eval mode: the fused path, gradients through the folding
    opt.step()
    opt.zero_grad()


def bn_train_then_eval(block, x):
    block.train()
    block(x * 3 + 1)  # BatchNorm's running statistics move in place, without a version bump
    block.eval()


def update_bn(block, x):
    torch.optim.swa_utils.update_bn([x * 2 - 1, x * 3], block)  # SWA's BatchNorm recalibration


def optimizer(cls, **kw):
    def change(block, x):
        opt = cls(block.parameters(), lr=0.1, **kw)
        for _ in range(2):
            _train_step(block, opt, x)
    change.__name__ = f"{cls.__name__}-{'-'.join(k for k, v in kw.items() if v) or 'for-loop'}"
    return change


def in_place(block, x):
    with torch.no_grad():
        block.branch2[1].conv.weight.mul_(1.5)
        if block.branch2[1].bn is not None:
            block.branch3[0].bn.running_var.mul_(3.0)


def load_state_dict(block, x):
    other = randomize_(FusedInception.from_spec(block.spec))
    block.load_state_dict(other.state_dict())


def half_round_trip(block, x):
    block.half().float()  # .to() swaps each tensor's storage (new data_ptr, same object and version)


def new_parameter(block, x):
    w = block.branch1.conv.weight
    block.branch1.conv.weight = nn.Parameter(torch.randn_like(w))


def new_buffer(block, x):
    bn = block.branch2[0].bn
    if bn is not None:
        bn.running_mean = torch.randn_like(bn.running_mean)
    else:
        block.branch2[0].conv.bias = nn.Parameter(torch.randn_like(block.branch2[0].conv.bias))


def data_then_invalidate(block, x):
    block.branch1.conv.weight.data.mul_(2.0)  # bypasses the version counter: a documented limit...
    fi.invalidate_caches()  # ...which this call lifts


def new_eps(block, x):
    for m in block.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 0.5  # a plain attribute: no version at all


CHANGES = [bn_train_then_eval, update_bn,
           optimizer(torch.optim.Adam, fused=True), optimizer(torch.optim.AdamW, fused=True),
           optimizer(torch.optim.SGD, fused=True, momentum=0.9),
           optimizer(torch.optim.Adam, foreach=True), optimizer(torch.optim.SGD, foreach=True),
           optimizer(torch.optim.Adam, foreach=False),
           in_place, load_state_dict, half_round_trip, new_parameter, new_buffer, data_then_invalidate, new_eps]


NEEDS_BN = (bn_train_then_eval, update_bn, new_eps)  # the paper block has no BatchNorm


@pytest.mark.parametrize("spec,change", [
    pytest.param(spec, change, id=f"{name}-{change.__name__}")
    for name, spec in (("torchvision", TV), ("paper", PAPER))
    for change in CHANGES if spec.batch_norm or change not in NEEDS_BN])
def test_inference_forward_sees_every_change(spec, change):
    block = make_block(spec)
    x = make_input(2, 6, 5, 5)
    fused_matches_oracle(block, x)  # fills the cache
    with torch.no_grad():
        before = block(x)
    change(block, x)
    block.eval()
    fused_matches_oracle(block, x)
    with torch.no_grad():
        assert not torch.allclose(block(x), before), "the change should have changed the output"


def test_training_forward_reads_live_parameters():
    """With grad enabled there is no cache: even a write through ``.data`` (no version bump, no
    optimizer step) is seen by the next training forward."""
    block = make_block(PAPER)
    x = make_input(2, 6, 5, 5)
    block(x)
    block.branch2[1].conv.weight.data.mul_(2.0)
    out = block(x)
    assert block.last_backend == "triton" and out.grad_fn is not None
    assert rel_err(out, oracle(block, x)) < tolerance(torch.float32)


def test_cache_is_reused_while_nothing_changes():
    block = make_block(TV)
    x = make_input(1, 6, 4, 4)
    with torch.no_grad():
        block(x)
        first = block.packed_weights(torch.float32)
        block(x)
    assert block.packed_weights(torch.float32) is first


# -- submodules replaced or edited after construction ---------------------------------------------
def test_replaced_submodule_takes_effect():
    block = make_block(TV)
    x = make_input(2, 6, 7, 6)
    fused_matches_oracle(block, x)
    block.branch2[1].conv = randomize_(nn.Conv2d(4, 5, 5, padding=2, bias=False))  # 3x3 -> 5x5
    assert block.spec.k3 == 5
    fused_matches_oracle(block, x)


@pytest.mark.parametrize("edit,match", [
    (lambda b: setattr(b.branch2[1], "conv", nn.Conv2d(4, 5, 3, stride=2, padding=1, bias=False)), "stride"),
    (lambda b: setattr(b.branch2[1].conv, "padding", (0, 0)), "padding"),
    (lambda b: delattr(b.branch3[0], "bn"), "BatchNorm presence"),
    (lambda b: setattr(b.branch3[0].bn, "eps", 0.5), "BatchNorm eps differs"),
    (lambda b: setattr(b.branch4, "0", nn.AvgPool2d(3, 1, 1)), "MaxPool2d"),
    (lambda b: setattr(b, "branch5", nn.Conv2d(6, 2, 1)), "expected 4 branches"),
], ids=["strided-conv", "edited-padding", "deleted-bn", "one-eps", "avg-pool", "extra-branch"])
def test_submodule_change_that_no_longer_fits_raises(edit, match):
    block = make_block(TV)
    x = make_input(1, 6, 4, 4)
    fused_matches_oracle(block, x)
    edit(block)
    with pytest.raises(NotAnInceptionBlock, match=match):
        block(x)


def test_hooks_added_after_construction_run_on_the_reference_path():
    block = make_block(TV)
    x = make_input(1, 6, 4, 4)
    seen = []
    handle = block.branch2[1].conv.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with pytest.warns(RuntimeWarning, match="branch2.1.conv has forward hooks"):
        out = block(x)
    assert block.last_backend == "reference" and seen == [(1, 5, 4, 4)]
    assert rel_err(out, oracle(block, x)) < tolerance(torch.float32)
    block.backend = "triton"
    with pytest.raises(RuntimeError, match="would bypass"):
        block(x)
    handle.remove()
    block.backend = "auto"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fused_matches_oracle(block, x)


def test_parametrization_added_after_construction_is_honoured():
    block = make_block(PAPER)
    x = make_input(1, 6, 4, 4)
    fused_matches_oracle(block, x)
    torch.nn.utils.parametrizations.weight_norm(block.branch1.conv)
    with torch.no_grad():
        block.branch1.conv.parametrizations.weight.original0.mul_(2.0)  # the norm: doubles the weight
        with pytest.warns(RuntimeWarning, match="parametrized"):
            out = block(x)
        assert block.last_backend == "reference"
        torch.testing.assert_close(out, torch.cat([branch(x) for branch in block.children()], 1))
        torch.testing.assert_close(out[:, :3], 2 * nn.functional.conv2d(x, block.branch1.conv.weight / 2,
                                                                       block.branch1.conv.bias / 2).relu())


def test_copies_follow_their_own_parameters():
    """deepcopy (as AveragedModel/EMA does) and torch.save/load give blocks bound to their own
    modules: changing a copy changes neither the original nor a stale cache."""
    block = make_block(TV)
    x = make_input(1, 6, 4, 4)
    fused_matches_oracle(block, x)
    twin = copy.deepcopy(block)
    ema = torch.optim.swa_utils.AveragedModel(block)
    with torch.no_grad():
        twin.branch2[1].conv.weight.mul_(2.0)
    fused_matches_oracle(twin, x)
    fused_matches_oracle(block, x)
    other = make_block(TV)
    ema.update_parameters(other)  # the running average moves toward another block's weights
    averaged = ema.module
    fused_matches_oracle(averaged, x)
    buffer = io.BytesIO()
    torch.save(twin, buffer)
    buffer.seek(0)
    fused_matches_oracle(torch.load(buffer, weights_only=False), x)
