"""Inception-v3 and pytorch-fid's FID Inception (``fused_inception.models.inception_v3``).

Without the originals: torchvision's state_dict layout written out here by hand, every mixed block
against its ``fused_inception.graph`` description (convs by name, pools as traced by ``torch.fx``,
output shape), shapes and modes, the FID preprocessing and strict weight loading. With torchvision
and pytorch-fid installed (not with CI's CPU torch; see the module's last section for the side-venv
command): the same keys and shapes, the same numbers.
"""

from __future__ import annotations

import pytest
import torch
import torch.fx
import torch.nn.functional as F

import fused_inception.models as fm
from fused_inception.graph import Conv, Pool, inception_v3_graph
from fused_inception.models.inception_v3 import BasicConv2d

from .helpers import randomize_, rel_err

# -- torchvision's layout, written out independently of the model and of graph.py ---------------
STEM = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]
UNITS = {  # the BasicConv2d children of each block kind, in registration order
    "A": ["branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3",
          "branch_pool"],
    "B": ["branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"],
    "C": ["branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3", "branch7x7dbl_1", "branch7x7dbl_2",
          "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5", "branch_pool"],
    "D": ["branch3x3_1", "branch3x3_2", "branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3", "branch7x7x3_4"],
    "E": ["branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1", "branch3x3dbl_2",
          "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool"],
}
KIND = {"Mixed_5b": "A", "Mixed_5c": "A", "Mixed_5d": "A", "Mixed_6a": "B", "Mixed_6b": "C", "Mixed_6c": "C",
        "Mixed_6d": "C", "Mixed_6e": "C", "Mixed_7a": "D", "Mixed_7b": "E", "Mixed_7c": "E"}
FID_CLASS = {"Mixed_5b": fm.FIDInceptionA, "Mixed_5c": fm.FIDInceptionA, "Mixed_5d": fm.FIDInceptionA,
             "Mixed_6a": fm.InceptionB, "Mixed_6b": fm.FIDInceptionC, "Mixed_6c": fm.FIDInceptionC,
             "Mixed_6d": fm.FIDInceptionC, "Mixed_6e": fm.FIDInceptionC, "Mixed_7a": fm.InceptionD,
             "Mixed_7b": fm.FIDInceptionE_1, "Mixed_7c": fm.FIDInceptionE_2}
TV_CLASS = {"A": fm.InceptionA, "B": fm.InceptionB, "C": fm.InceptionC, "D": fm.InceptionD, "E": fm.InceptionE}
UNIT_KEYS = ["conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]


def expected_keys(aux: bool) -> list[str]:
    """torchvision's Inception3 state_dict keys in order: AuxLogits is registered after Mixed_6e."""
    units = list(STEM)
    for block in KIND:
        if block == "Mixed_7a" and aux:
            units += ["AuxLogits.conv0", "AuxLogits.conv1"]
        units += [f"{block}.{u}" for u in UNITS[KIND[block]]]
    keys = [f"{u}.{k}" for u in units for k in UNIT_KEYS] + ["fc.weight", "fc.bias"]
    if aux:  # AuxLogits.fc comes right after AuxLogits.conv1
        at = keys.index("Mixed_7a.branch3x3_1.conv.weight")
        keys[at:at] = ["AuxLogits.fc.weight", "AuxLogits.fc.bias"]
    return keys


@pytest.fixture(scope="module")
def tv_net():
    return fm.inception_v3()


@pytest.fixture(scope="module")
def fid_net():
    return fm.fid_inception_v3()


@pytest.mark.parametrize("config, aux, classes", [
    pytest.param("torchvision", True, 1000, id="torchvision-aux"),
    pytest.param("torchvision", False, 10, id="torchvision-no-aux-10-classes"),
    pytest.param("fid", False, 1008, id="fid"),
])
def test_state_dict_keys_are_torchvisions(config, aux, classes):
    net = fm.fid_inception_v3().inception if config == "fid" else fm.inception_v3(classes, aux_logits=aux)
    sd = net.state_dict()
    assert list(sd) == expected_keys(aux)
    assert sd["fc.weight"].shape == (classes, 2048)
    if aux:
        assert sd["AuxLogits.conv1.conv.weight"].shape == (768, 128, 5, 5)
        assert sd["AuxLogits.fc.weight"].shape == (classes, 768)


def traced_pools(block: torch.nn.Module) -> list[tuple]:
    """(kind, kernel, stride, padding, count_include_pad of an avg) of every pool of the traced forward."""
    pools = []
    for node in torch.fx.symbolic_trace(block).graph.nodes:
        if node.op != "call_function" or node.target not in (F.avg_pool2d, F.max_pool2d):
            continue
        kind = "avg" if node.target is F.avg_pool2d else "max"
        kw = dict(zip(("kernel_size", "stride", "padding"), node.args[1:]), **node.kwargs)
        pair = (lambda v: (v, v) if isinstance(v, int) else tuple(v))
        pools.append((kind, pair(kw["kernel_size"]), pair(kw["stride"]), pair(kw.get("padding", 0)),
                      kind == "avg" and kw.get("count_include_pad", True)))
    return pools


@pytest.mark.parametrize("name", list(KIND))
@pytest.mark.parametrize("fid", [False, True], ids=["torchvision", "fid"])
def test_block_is_its_graph(name, fid, tv_net, fid_net):
    """Each block's convs (by name), pools and output against ``inception_v3_graph(name, fid)``."""
    block = getattr(fid_net.inception if fid else tv_net, name)
    graph = inception_v3_graph(name, fid=fid)
    assert type(block) is (FID_CLASS if fid else {b: TV_CLASS[k] for b, k in KIND.items()})[name]
    units = {n: m for n, m in block.named_children() if isinstance(m, BasicConv2d)}
    assert list(units) == UNITS[KIND[name]]
    convs = [n for n in graph.nodes if isinstance(n, Conv)]
    assert sorted(c.name for c in convs) == sorted(units)
    for c in convs:
        conv, bn = units[c.name].conv, units[c.name].bn
        assert (conv.in_channels, conv.out_channels) == (c.cin, c.cout), c.name
        assert (conv.kernel_size, conv.stride, conv.padding) == (c.kernel, c.stride, c.padding), c.name
        assert conv.bias is None and not c.bias and c.batch_norm and c.relu and bn.eps == c.bn_eps, c.name
    want_pools = [(p.kind, p.kernel, p.stride, p.padding, p.kind == "avg" and p.count_include_pad)
                  for p in graph.nodes if isinstance(p, Pool)]
    assert traced_pools(block) == want_pools
    with torch.no_grad():
        out = block.eval()(torch.randn(1, graph.in_channels, 9, 9))
    assert out.shape == (1, graph.out_channels, *graph.out_size(9, 9))


@pytest.mark.parametrize("size, n, train, aux", [
    pytest.param(75, 2, False, True, id="eval-75x75"),
    pytest.param(299, 1, False, True, id="eval-299x299"),
    pytest.param(75, 2, True, False, id="train-no-aux-75x75"),
    pytest.param(299, 2, True, True, id="train-aux-299x299"),  # the aux head's 5x5 conv needs 299x299
])
def test_output_shapes_and_modes(size, n, train, aux):
    net = fm.inception_v3(num_classes=10, aux_logits=aux).train(train)
    with torch.no_grad():
        out = net(torch.randn(n, 3, size, size))
    if train and aux:
        assert isinstance(out, fm.InceptionOutputs)
        assert out.logits.shape == out.aux_logits.shape == (n, 10)
    else:
        assert isinstance(out, torch.Tensor) and out.shape == (n, 10)


def test_75x75_is_the_smallest_input():
    net = fm.inception_v3(num_classes=10).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 75, 75)).shape == (1, 10)
        with pytest.raises(RuntimeError):
            net(torch.randn(1, 3, 74, 75))


def test_transform_input_maps_imagenet_normalisation_to_minus_one_one():
    plain = randomize_(fm.inception_v3(num_classes=10, aux_logits=False)).double().eval()
    moved = fm.inception_v3(num_classes=10, aux_logits=False, transform_input=True).double().eval()
    moved.load_state_dict(plain.state_dict())
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)
    x = torch.randn(2, 3, 75, 75, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(moved(x), plain((x * std + mean - 0.5) / 0.5)) < 1e-12


# -- the FID configuration ------------------------------------------------------------------------
def test_fid_features_are_pytorch_fids_pipeline():
    """interpolate to 299x299 (bilinear), 2x - 1, pytorch-fid's blocks 0-3, pool3 flattened."""
    net = randomize_(fm.fid_inception_v3()).eval()
    x = torch.rand(2, 3, 64, 80)
    inc = net.inception
    blocks = [[inc.Conv2d_1a_3x3, inc.Conv2d_2a_3x3, inc.Conv2d_2b_3x3, torch.nn.MaxPool2d(3, 2)],
              [inc.Conv2d_3b_1x1, inc.Conv2d_4a_3x3, torch.nn.MaxPool2d(3, 2)],
              [getattr(inc, f"Mixed_{b}") for b in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e")],
              [inc.Mixed_7a, inc.Mixed_7b, inc.Mixed_7c, torch.nn.AdaptiveAvgPool2d(1)]]
    with torch.no_grad():
        want = 2 * F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1
        for block in blocks:
            want = torch.nn.Sequential(*block)(want)
        got = net(x)
    assert got.shape == (2, 2048) and want.shape == (2, 2048, 1, 1)
    torch.testing.assert_close(got, want.flatten(1), rtol=0, atol=0)


def _without(sd, key):
    return {k: v for k, v in sd.items() if k != key}


@pytest.mark.parametrize("change, error", [
    pytest.param(lambda sd: sd, None, id="exact"),
    pytest.param(lambda sd: _without(sd, "fc.bias"), "Missing key", id="missing-key"),
    pytest.param(lambda sd: {**sd, "AuxLogits.fc.bias": torch.zeros(1008)}, "Unexpected key", id="extra-key"),
    pytest.param(lambda sd: fm.inception_v3(num_classes=1008).state_dict(), "Unexpected key",
                 id="torchvision-checkpoint"),
])
def test_fid_weights_load_strictly(change, error, tmp_path):
    source = randomize_(fm.fid_inception_v3()).inception.state_dict()
    path = tmp_path / "pt_inception.pth"
    torch.save(change(source), path)
    if error is None:
        for loaded in (fm.fid_inception_v3(weights_path=path), fm.load_fid_weights(fm.fid_inception_v3(), path)):
            got = loaded.inception.state_dict()
            assert list(got) == list(source) and all(torch.equal(got[k], source[k]) for k in source)
    else:
        with pytest.raises(RuntimeError, match=error):
            fm.fid_inception_v3(weights_path=path)
        with pytest.raises(RuntimeError, match=error):
            fm.load_fid_weights(fm.fid_inception_v3(), path)


# -- against the real libraries -------------------------------------------------------------------
# CI's CPU torch has no torchvision: these skip there. Run them in a side venv that has both, e.g.
#   python3 -m venv /work/sidevenv && /work/sidevenv/bin/pip install torch torchvision pytorch-fid \
#       "numpy<2.4" pytest
#   PYTHONPATH=$PWD /work/sidevenv/bin/python -m pytest -q -p no:cacheprovider tests/test_models_v3.py
@pytest.mark.parametrize("aux", [True, False], ids=["aux", "no-aux"])
def test_same_state_dict_as_torchvision(aux):
    tvm = pytest.importorskip("torchvision.models")
    ours = fm.inception_v3(aux_logits=aux, init_weights=False).state_dict()
    theirs = tvm.inception_v3(weights=None, aux_logits=aux, init_weights=False).state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)


@pytest.mark.parametrize("mode, size, transform", [
    pytest.param("eval", 75, False, id="eval-75x75"),
    pytest.param("eval", 75, True, id="eval-transform_input-75x75"),
    pytest.param("train", 299, False, id="train-aux-299x299"),
])
def test_same_outputs_as_torchvision(mode, size, transform):
    tvm = pytest.importorskip("torchvision.models")
    theirs = tvm.inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=transform)
    theirs = randomize_(theirs).double().train(mode == "train")
    ours = fm.inception_v3(aux_logits=True, init_weights=False, transform_input=transform)
    ours.load_state_dict(theirs.state_dict())
    ours = ours.double().train(mode == "train")
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    with torch.no_grad():
        outs = []
        for net in (ours, theirs):
            torch.manual_seed(0)  # the same dropout mask in training mode
            outs.append(net(x))
    if mode == "train":
        assert type(outs[0]).__name__ == type(outs[1]).__name__ == "InceptionOutputs"
        assert rel_err(outs[0].aux_logits, outs[1].aux_logits) <= 1e-10
        outs = [o.logits for o in outs]
    assert rel_err(outs[0], outs[1]) <= 1e-10


def test_same_features_as_pytorch_fid(monkeypatch):
    pytest.importorskip("torchvision")
    pfi = pytest.importorskip("pytorch_fid.inception")
    ours = randomize_(fm.fid_inception_v3()).double().eval()
    urls = []

    def no_download(url, *args, **kwargs):
        urls.append(url)
        return ours.inception.state_dict()

    monkeypatch.setattr(pfi, "load_state_dict_from_url", no_download)
    theirs = pfi.InceptionV3([3], resize_input=True, normalize_input=True, use_fid_inception=True).double().eval()
    assert urls == [pfi.FID_WEIGHTS_URL]
    x = torch.rand(2, 3, 64, 80, dtype=torch.float64)
    with torch.no_grad():
        (want,) = theirs(x)
        got = ours(x)
    assert want.shape == (2, 2048, 1, 1) and got.shape == (2, 2048)
    assert rel_err(got, want.flatten(1)) <= 1e-10
