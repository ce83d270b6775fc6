"""The pure-PyTorch reference against an independent torch.nn.functional computation."""

import pytest
import torch
import torch.nn.functional as F

from fused_inception import GOOGLENET_BLOCKS, InceptionSpec, googlenet_spec
from fused_inception.reference import ReferenceInception

from .helpers import TV_KEYS, randomize_


def functional_block(x, sd, spec):
    """An independent formula of the block from a state_dict (no fused_inception code)."""
    def unit(t, p, k):
        t = F.conv2d(t, sd[f"{p}.conv.weight"], sd.get(f"{p}.conv.bias"), padding=k // 2)
        if spec.batch_norm:
            t = (t - sd[f"{p}.bn.running_mean"][:, None, None]) / torch.sqrt(
                sd[f"{p}.bn.running_var"][:, None, None] + spec.bn_eps)
            t = t * sd[f"{p}.bn.weight"][:, None, None] + sd[f"{p}.bn.bias"][:, None, None]
        return t.clamp_min(0) if spec.relu else t

    pool = F.max_pool2d(x, 3, 1, 1)
    return torch.cat([unit(x, "branch1", 1),
                      unit(unit(x, "branch2.0", 1), "branch2.1", spec.k3),
                      unit(unit(x, "branch3.0", 1), "branch3.1", spec.k5),
                      unit(pool, "branch4.1", 1)], 1)


def test_torchvision_state_dict_keys():
    ref = ReferenceInception(googlenet_spec("3a", "torchvision"))
    assert set(ref.state_dict()) == TV_KEYS
    assert isinstance(ref.branch4[0], torch.nn.MaxPool2d) and ref.branch4[0].ceil_mode
    assert ref.branch3[1].conv.kernel_size == (3, 3)  # torchvision's "5x5" is a 3x3
    assert ReferenceInception(googlenet_spec("3a", "paper")).branch3[1].conv.kernel_size == (5, 5)


CASES = [pytest.param(googlenet_spec(n, v), 2, 7, 7, id=f"{n}-{v}")
         for n in GOOGLENET_BLOCKS for v in ("paper", "torchvision")]
CASES += [
    pytest.param(InceptionSpec(5, 3, 4, 6, 2, 3, 2, k3=3, k5=5, bias=True, batch_norm=False), 1, 1, 1, id="1x1-map"),
    pytest.param(InceptionSpec(5, 3, 4, 6, 2, 3, 2, k3=5, k5=3), 3, 13, 17, id="13x17-bn"),
    pytest.param(InceptionSpec(5, 3, 4, 6, 2, 3, 2, relu=False), 3, 7, 7, id="no-relu"),
    pytest.param(InceptionSpec(5, 3, 4, 6, 2, 3, 2, batch_norm=False, bias=True, relu=False), 0, 5, 5, id="batch0"),
    pytest.param(InceptionSpec(6, 1, 2, 3, 4, 5, 6, k3=7, k5=1, batch_norm=True, bias=True), 1, 9, 4, id="k7-k1"),
]


@pytest.mark.parametrize("spec,n,h,w", CASES)
def test_reference_matches_functional(spec, n, h, w):
    ref = randomize_(ReferenceInception(spec)).double().eval()
    x = torch.randn(n, spec.in_channels, h, w, dtype=torch.float64)
    with torch.no_grad():
        got = ref(x)
        want = functional_block(x, ref.state_dict(), spec)
    assert got.shape == (n, spec.out_channels, h, w)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
