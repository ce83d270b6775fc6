"""convert(): structural recognition, probe verification, reports, GoogLeNet equivalence."""

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fused_inception as fi
from fused_inception import FusedInception, convert
from fused_inception.reference import ReferenceInception

from .helpers import randomize_, rel_err, requires_interpreter, tolerance

SMALL = fi.InceptionSpec(6, 3, 4, 5, 2, 3, 2)


def seq_unit(cin, cout, k, bn=True, relu=True):
    layers = [nn.Conv2d(cin, cout, k, padding=k // 2, bias=not bn)]
    layers += [nn.BatchNorm2d(cout)] if bn else []
    layers += [nn.ReLU(inplace=True)] if relu else []
    return nn.Sequential(*layers)


class SeqInception(nn.Module):
    """An Inception block written with nn.Sequential units and unrelated names."""

    def __init__(self, cin=6, k5=5, relu=True):
        super().__init__()
        self.a = seq_unit(cin, 3, 1, relu=relu)
        self.b = nn.Sequential(seq_unit(cin, 4, 1, relu=relu), seq_unit(4, 5, 3, relu=relu))
        self.c = nn.Sequential(seq_unit(cin, 2, 1, relu=relu), seq_unit(2, 3, k5, relu=relu))
        self.d = nn.Sequential(nn.MaxPool2d(3, 1, 1), seq_unit(cin, 2, 1, relu=relu))

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x), self.c(x), self.d(x)], 1)


class LooksLikeInception(SeqInception):
    """Same structure, different function: the pool branch uses an average pool."""

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x), self.c(x), self.d[1](F.avg_pool2d(x, 3, 1, 1))], 1)


class SwappedBranches(SeqInception):
    def forward(self, x):
        return torch.cat([self.b(x), self.a(x), self.c(x), self.d(x)], 1)


def test_sequential_style_block_is_recognised_and_equivalent():
    model = nn.Sequential(nn.Conv2d(3, 6, 1), randomize_(SeqInception()), nn.ReLU())
    model.eval()
    x = torch.randn(2, 3, 6, 5)
    with torch.no_grad():
        want = model(x)
    model, report = convert(model, backend="reference", return_report=True)
    assert isinstance(model[1], FusedInception) and report.replaced == ["1"]
    assert model[1].spec.k5 == 5 and not model[1].spec.bias
    assert list(model[1].state_dict()) == list(SeqInception().state_dict())  # names kept
    with torch.no_grad():
        torch.testing.assert_close(model(x), want)


@pytest.mark.parametrize("cls", [LooksLikeInception, SwappedBranches])
def test_lookalike_that_computes_something_else_is_skipped(cls, caplog):
    model = nn.Sequential(cls())
    with caplog.at_level(logging.INFO, logger="fused_inception"):
        model, report = convert(model, return_report=True)
    assert isinstance(model[0], cls)
    assert report.replaced == [] and "differs" in report.skipped["0"]
    assert "skipped" in caplog.text


def test_structural_misfit_is_reported_with_the_part():
    block = SeqInception()
    block.d[0] = nn.MaxPool2d(3, 2, 1)
    _, report = convert(nn.Sequential(block), return_report=True)
    assert "0.d.0" in report.skipped["0"] and "MaxPool2d(3, stride=1, padding=1)" in report.skipped["0"]


def test_probe_leaves_model_state_alone():
    model = nn.Sequential(randomize_(SeqInception())).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    model, report = convert(model, return_report=True)
    assert report.replaced == ["0"]
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and model[0].training and model[0].b[1][1].training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_filter_fn_and_root_block():
    model = nn.Sequential(SeqInception(), SeqInception(cin=16))
    model, report = convert(model, filter_fn=lambda path, m: path != "1", return_report=True)
    assert isinstance(model[0], FusedInception) and isinstance(model[1], SeqInception)
    assert report.skipped == {"1": "rejected by filter_fn"}
    root = convert(ReferenceInception(SMALL))
    assert isinstance(root, FusedInception)


def test_relu_less_blocks_convert():
    block = randomize_(SeqInception(relu=False)).eval()
    x = torch.randn(1, 6, 5, 5)
    with torch.no_grad():
        want = block(x)
    fused = convert(block, backend="reference")
    assert isinstance(fused, FusedInception) and not fused.spec.relu
    with torch.no_grad():
        torch.testing.assert_close(fused(x), want)


@pytest.mark.parametrize("variant,backend", [
    ("paper", "reference"),
    # slow: all nine blocks in the interpreter (~30 s); the default tier runs blocks one by one.
    pytest.param("torchvision", "auto", marks=[requires_interpreter, pytest.mark.slow], id="torchvision-auto"),
])
def test_googlenet_convert_same_logits(variant, backend):
    model = randomize_(fi.models.googlenet(variant, num_classes=10)).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        want = model(x)
        model, report = convert(model, backend=backend, return_report=True)
        got = model(x)
    assert len(report.replaced) == 9 and not report.skipped
    assert all(isinstance(getattr(model, f"inception{n}"), FusedInception) for n in fi.GOOGLENET_BLOCKS)
    assert rel_err(got, want) < 10 * tolerance(torch.float32)


def test_googlenet_aux_classifiers_only_in_training():
    model = fi.models.googlenet("torchvision", num_classes=7)
    model.train()
    out = model(torch.randn(2, 3, 64, 64))
    assert out.logits.shape == out.aux_logits1.shape == out.aux_logits2.shape == (2, 7)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    assert fi.models.googlenet("paper", aux_logits=False).aux1 is None


def test_torchvision_state_dict_compatibility():
    tvm = pytest.importorskip("torchvision.models")
    ours = fi.models.googlenet("torchvision", num_classes=1000, aux_logits=True, init_weights=False)
    theirs = tvm.googlenet(weights=None, aux_logits=True, init_weights=False)
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)
    ours.load_state_dict(b)
    theirs.eval()
    ours.eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))
        converted = convert(theirs)
        torch.testing.assert_close(converted(x), ours(x), rtol=1e-4, atol=1e-4)
