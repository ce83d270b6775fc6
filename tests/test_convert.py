"""convert(): structural recognition, probe verification, reports, GoogLeNet equivalence."""

import logging
import threading

import pytest
import torch
import torch.nn.functional as F
import torch.nn.utils.prune
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


# -- the converter never changes what a model does -----------------------------------------------
def forward_call_counter(module: nn.Module, kind: str) -> list:
    calls: list = []
    if kind == "pre":
        module.register_forward_pre_hook(lambda m, args: calls.append(m))
    else:
        module.register_forward_hook(lambda m, args, out: calls.append(out.shape))
    return calls


def test_probe_runs_no_user_hook_and_block_hooks_move_to_the_fused_block():
    block = randomize_(SeqInception()).eval()
    calls = forward_call_counter(block, "post")
    pre_calls = forward_call_counter(block, "pre")
    model, report = convert(nn.Sequential(block), return_report=True)
    assert calls == [] and pre_calls == []  # the probe ran none of them
    assert isinstance(model[0], FusedInception) and "forward hooks" in report.notes["0"]
    x = torch.randn(1, 6, 4, 4)
    with torch.no_grad():
        model(x)
    assert calls == [(1, 13, 4, 4)] and len(pre_calls) == 1 and pre_calls[0] is model[0]


def test_hook_handles_still_remove_the_moved_hooks():
    block = randomize_(SeqInception()).eval()
    calls = []
    handle = block.register_forward_hook(lambda m, a, o: calls.append(1))
    fused = convert(block, backend="reference")
    fused(torch.randn(1, 6, 3, 3))
    handle.remove()
    fused(torch.randn(1, 6, 3, 3))
    assert calls == [1]


def _weight_norm_legacy(conv):
    with pytest.warns(FutureWarning):
        return torch.nn.utils.weight_norm(conv)


BYPASSED = {
    "forward-hook": (lambda c: c.register_forward_hook(lambda *a: None), "forward hooks"),
    "forward-pre-hook": (lambda c: c.register_forward_pre_hook(lambda *a: None), "forward pre hooks"),
    "full-backward-hook": (lambda c: c.register_full_backward_hook(lambda *a: None), "backward hooks"),
    "spectral-norm": (torch.nn.utils.parametrizations.spectral_norm, "parametrized"),
    "weight-norm-legacy": (_weight_norm_legacy, "WeightNorm"),
    "spectral-norm-legacy": (torch.nn.utils.spectral_norm, "SpectralNorm"),
    "pruned": (lambda c: torch.nn.utils.prune.l1_unstructured(c, "weight", 0.5), "L1Unstructured"),
}


@pytest.mark.parametrize("kind", list(BYPASSED))
def test_block_with_something_the_kernel_would_bypass_is_left_alone(kind):
    add, match = BYPASSED[kind]
    block = randomize_(SeqInception()).eval()
    add(block.b[1][0])
    model, report = convert(nn.Sequential(block), return_report=True)
    assert model[0] is block and report.replaced == []
    assert "0.b.1.0" in report.skipped["0"] and match in report.skipped["0"], report.skipped


class DropoutAtEnd(SeqInception):
    """The plain block in eval mode; functional dropout on the output in training mode."""

    def forward(self, x):
        return F.dropout(super().forward(x), 0.5, self.training)


class SiLUUnit(nn.Module):
    """A unit-style module (.conv, .bn) whose activation is not ReLU."""

    def __init__(self, cin, cout, k):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.silu(self.bn(self.conv(x)))


class SiLUInception(SeqInception):
    def __init__(self):
        super().__init__()
        self.a = SiLUUnit(6, 3, 1)


def test_block_whose_training_forward_differs_is_skipped():
    model = nn.Sequential(randomize_(DropoutAtEnd()))
    model, report = convert(model, return_report=True)
    assert isinstance(model[0], DropoutAtEnd)
    assert "training-mode forward differs" in report.skipped["0"]


@pytest.mark.parametrize("cls", [SiLUInception, SwappedBranches, DropoutAtEnd])
def test_from_module_verifies_unless_told_not_to(cls):
    block = randomize_(cls()).eval()
    with pytest.raises(fi.NotAnInceptionBlock, match="differs from the Inception block"):
        FusedInception.from_module(block)
    unchecked = FusedInception.from_module(block, verify=False, backend="reference")
    assert isinstance(unchecked, FusedInception)


class WithLock(SeqInception):
    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()


def bn_eps_zero():
    block = SeqInception()
    for m in block.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 0.0
    return block


def lazy_convs():
    block = SeqInception()
    for branch in (block.a, block.b[0], block.c[0], block.d[1]):
        branch[0] = nn.LazyConv2d(branch[0].out_channels, 1, bias=False)
    return block


@pytest.mark.parametrize("make,match", [
    (bn_eps_zero, "eps=0.0; folding needs eps > 0"),
    (WithLock, "cannot make a probe copy"),
    (lazy_convs, "could not be inspected: ValueError"),
], ids=["bn-eps-0", "unpicklable-attribute", "lazy-convs"])
def test_odd_blocks_are_skipped_with_a_reason_not_crashed_on(make, match):
    model = nn.Sequential(nn.Identity(), make())
    model, report = convert(model, return_report=True)
    assert report.replaced == [] and match in report.skipped["1"], report.skipped


def test_meta_device_model_converts_and_propagates_shapes():
    with torch.device("meta"):
        model = nn.Sequential(SeqInception())
    model, report = convert(model, return_report=True)
    assert report.replaced == ["0"] and isinstance(model[0], FusedInception)
    out = model(torch.empty(2, 6, 5, 7, device="meta"))
    assert out.shape == (2, 13, 5, 7) and out.is_meta and model[0].last_backend == "reference"
    model.to_empty(device="cpu")
    randomize_(model).eval()
    x = torch.randn(1, 6, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(model(x), fi.unconvert(model)(x))


def test_one_instance_used_twice_becomes_one_fused_instance():
    block = randomize_(SeqInception()).eval()
    relu = nn.ReLU()  # shared too, but not a block: no note
    model = nn.Sequential(block, relu, nn.Conv2d(13, 6, 1), relu, block)
    x = torch.randn(1, 6, 4, 4)
    with torch.no_grad():
        want = model(x)
    model, report = convert(model, backend="reference", return_report=True)
    assert isinstance(model[0], FusedInception) and model[4] is model[0]
    assert report.replaced == ["0", "4"] and report.notes == {"4": "the same module instance as 0"}
    with torch.no_grad():
        torch.testing.assert_close(model(x), want)


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_is_a_clear_error(how):
    block = FusedInception(6, 3, 4, 5, 2, 3, 2).eval()
    model = nn.Sequential(nn.Identity(), block)
    with pytest.raises(RuntimeError, match="does not support TorchScript.*torch.compile.*torch.export"):
        if how == "script":
            torch.jit.script(model)
        else:
            torch.jit.trace(model, torch.randn(1, 6, 4, 4))


def test_unconvert_restores_plain_blocks_with_the_same_parameters_and_hooks():
    block = randomize_(SeqInception()).eval()
    calls = []
    block.register_forward_hook(lambda m, a, o: calls.append(type(m).__name__))
    model = nn.Sequential(block, nn.Conv2d(13, 6, 1), ReferenceInception(SMALL))
    randomize_(model).eval()
    x = torch.randn(1, 6, 5, 5)
    with torch.no_grad():
        want = model(x)
        fused = convert(model)
        assert isinstance(fused[0], FusedInception) and isinstance(fused[2], FusedInception)
        torch.testing.assert_close(fused(x), want)
        back = fi.unconvert(fused)
        assert back[0] is block and type(back[2]) is ReferenceInception
        assert back[0].b[1][0].weight is fused[0].b[1][0].weight
        torch.testing.assert_close(back(x), want)
    assert calls == ["SeqInception", "FusedInception", "SeqInception"]
    plain = fi.unconvert(FusedInception(6, 3, 4, 5, 2, 3, 2))
    assert type(plain) is ReferenceInception and set(plain.state_dict()) == set(ReferenceInception(SMALL).state_dict())


@requires_interpreter
def test_torch_export_of_a_converted_model():
    model = convert(randomize_(nn.Sequential(nn.Conv2d(3, 6, 1), SeqInception(), nn.ReLU())).eval())
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        want = model(x)
    exported = torch.export.export(model, (x,))
    assert any("fused_inception.inception_forward" in str(n.target) for n in exported.graph.nodes)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), want)


def test_unconvert_of_from_module_gives_back_the_block_with_its_hooks():
    """from_module leaves the block's own hooks on the block (the fused one does not run them);
    unconvert returns that block, hooks intact, whatever its branches are called."""
    block = randomize_(SeqInception()).eval()  # branches a, b, c, d: not ReferenceInception's names
    calls = []
    block.register_forward_hook(lambda m, a, o: calls.append(1))
    fused = FusedInception.from_module(block, backend="reference")
    x = torch.randn(1, 6, 4, 4)
    with torch.no_grad():
        want = fused(x)
        back = fi.unconvert(fused)
        assert back is block and calls == []
        torch.testing.assert_close(back(x), want)
    assert calls == [1]
