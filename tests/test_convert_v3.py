"""``convert`` on Inception-v3 (torchvision's layout, ``models.inception_v3``) and pytorch-fid's FID
Inception (``models.fid_inception_v3``): every mixed block recognised from its traced code,
verified, replaced and reported by kind; look-alikes left alone with the reason; the whole
network's outputs unchanged. The same against the real torchvision and pytorch-fid where they
import (not over CI's CPU torch: run in a side venv, see the issue's closing note)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import fused_inception as fi
from fused_inception import FusedBlock
from fused_inception.models import fid_inception_v3, inception_v3
from fused_inception.models.inception_v3 import InceptionE

from .helpers import randomize_, rel_err, requires_interpreter, tolerance

MIXED = ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
         "Mixed_7a", "Mixed_7b", "Mixed_7c"]
KINDS = dict(zip(MIXED, ["A"] * 3 + ["B"] + ["C"] * 4 + ["D", "E", "E"]))
FID_KINDS = dict(zip(MIXED, ["fid-A"] * 3 + ["B"] + ["fid-C"] * 4 + ["D", "fid-E1", "fid-E2"]))


def _net(fid: bool):
    torch.manual_seed(0)
    model = fid_inception_v3().inception if fid else inception_v3(aux_logits=False, init_weights=False)
    return randomize_(model, bias_shift=0.0).eval()


@pytest.mark.parametrize("fid", [False, True], ids=["torchvision", "fid"])
def test_every_mixed_block_is_replaced_and_named(fid):
    model = _net(fid)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model, report = fi.convert(model, return_report=True)
    assert report.replaced == MIXED and not report.skipped
    assert report.kinds == (FID_KINDS if fid else KINDS)
    assert all(isinstance(getattr(model, name), FusedBlock) for name in MIXED)
    assert all(f"{name} [{kind}]" in str(report) for name, kind in report.kinds.items())
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())


@pytest.mark.parametrize("fid", [False, True], ids=["torchvision", "fid"])
def test_training_mode_is_the_unfused_networks(fid):
    """Batch statistics and running-stat updates: the fused blocks run their own code."""
    model = _net(fid)
    fused = fi.convert(copy.deepcopy(model))
    model.train(), fused.train()
    x = torch.randn(2, 3, 75, 75)
    torch.manual_seed(1)  # the same dropout mask for both
    want = model(x)
    torch.manual_seed(1)
    got = fused(x)
    torch.testing.assert_close(got, want)
    for (name, a), b in zip(model.named_buffers(), fused.buffers()):
        torch.testing.assert_close(a, b, msg=name)
    assert {getattr(fused, name).last_backend for name in MIXED} == {"reference"}


@requires_interpreter
@pytest.mark.slow
@pytest.mark.parametrize("fid", [False, True], ids=["torchvision", "fid"])
def test_whole_network_at_75x75_equals_the_unfused(fid):
    model = _net(fid)
    fused = fi.convert(copy.deepcopy(model), backend="triton")
    x = torch.randn(1, 3, 75, 75)  # the smallest input Inception-v3 takes
    with torch.no_grad():
        want, got = model(x), fused(x)
    assert rel_err(got, want) < tolerance(torch.float32)
    assert {getattr(fused, name).last_backend for name in MIXED} == {"triton"}


class SwappedE(InceptionE):
    """Torchvision's E block modules with another wiring: branch3x3_2a reads the other map."""

    def _forward(self, x):
        a = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        b3 = torch.cat([self.branch3x3_2a(d), self.branch3x3_2b(a)], 1)
        bd = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        return [self.branch1x1(x), b3, bd, self.branch_pool(F.avg_pool2d(x, 3, 1, 1))]


class TrainOnlyE(InceptionE):
    """Computes the E block in eval mode only: the training-mode probe must catch it."""

    def forward(self, x):
        out = super().forward(x)
        return out * 1.5 if self.training else out


def test_look_alikes_are_left_alone_with_the_reason():
    model = _net(False)
    model.Mixed_7b = SwappedE(1280)
    model.Mixed_7c = TrainOnlyE(2048).eval()  # traced in eval mode: no trace of the training branch
    model.Mixed_5b.branch1x1.register_forward_hook(lambda *a: None)
    model, report = fi.convert(model, return_report=True)
    assert "none of the known Inception blocks" in report.skipped["Mixed_7b"]
    assert "training-mode forward differs" in report.skipped["Mixed_7c"]
    assert "bypass" in report.skipped["Mixed_5b"]
    assert type(model.Mixed_7b) is SwappedE and type(model.Mixed_7c) is TrainOnlyE
    assert len(report.replaced) == 8


# -- the real libraries (skip over CI's CPU torch, where torchvision cannot import) ----------------
@requires_interpreter
@pytest.mark.slow
def test_real_torchvision_inception_v3():
    models = pytest.importorskip("torchvision.models")
    model = randomize_(models.inception_v3(weights=None, aux_logits=True, init_weights=False)).eval()
    fused, report = fi.convert(copy.deepcopy(model), backend="triton", return_report=True)
    assert report.replaced == MIXED and report.kinds == KINDS and not report.skipped
    x = torch.randn(1, 3, 75, 75)
    with torch.no_grad():
        assert rel_err(fused(x), model(x)) < tolerance(torch.float32)


def test_real_pytorch_fid_blocks_convert():
    inception = pytest.importorskip("pytorch_fid.inception")
    blocks = {"fid-A": inception.FIDInceptionA(192, 32), "fid-C": inception.FIDInceptionC(768, 128),
              "fid-E1": inception.FIDInceptionE_1(1280), "fid-E2": inception.FIDInceptionE_2(2048)}
    model = torch.nn.ModuleDict(blocks)
    model, report = fi.convert(model, return_report=True)
    assert report.kinds == {k: k for k in blocks} and not report.skipped
