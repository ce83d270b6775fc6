import json
from pathlib import Path

import pytest

from fused_inception import GOOGLENET_BLOCKS, GOOGLENET_SPATIAL, InceptionSpec, googlenet_spec

SHARED = Path(__file__).resolve().parents[2] / "shared" / "googlenet_blocks.json"


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/googlenet_blocks.json not beside the repo")
def test_googlenet_table_matches_shared_facts():
    facts = json.loads(SHARED.read_text())["blocks"]
    assert set(facts) == set(GOOGLENET_BLOCKS)
    for name, row in facts.items():
        assert GOOGLENET_BLOCKS[name] == tuple(row[:7]), name
        assert GOOGLENET_SPATIAL[name] == row[7], name


@pytest.mark.parametrize("name", list(GOOGLENET_BLOCKS))
def test_out_channels_chain(name):
    # Each block's output feeds the next block's input (through max-pools) in GoogLeNet.
    names = list(GOOGLENET_BLOCKS)
    spec = googlenet_spec(name)
    i = names.index(name)
    if i + 1 < len(names):
        assert spec.out_channels == GOOGLENET_BLOCKS[names[i + 1]][0]
    assert spec.out_channels == spec.ch1x1 + spec.ch3x3 + spec.ch5x5 + spec.pool_proj


def test_variants():
    p, t = googlenet_spec("3a", "paper"), googlenet_spec("3a", "torchvision")
    assert (p.k3, p.k5, p.bias, p.batch_norm) == (3, 5, True, False)
    assert (t.k3, t.k5, t.bias, t.batch_norm, t.bn_eps) == (3, 3, False, True, 1e-3)
    with pytest.raises(ValueError, match="variant"):
        googlenet_spec("3a", "keras")
    with pytest.raises(ValueError, match="unknown GoogLeNet block"):
        googlenet_spec("6a")


def test_spec_is_immutable_and_validated():
    s = InceptionSpec(8, 1, 2, 3, 4, 5, 6)
    with pytest.raises(AttributeError):
        s.ch1x1 = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="ch3x3red"):
        InceptionSpec(8, 1, 0, 3, 4, 5, 6)
    with pytest.raises(ValueError, match="k5"):
        InceptionSpec(8, 1, 2, 3, 4, 5, 6, k5=4)
    with pytest.raises(ValueError, match="in_channels"):
        InceptionSpec(8.0, 1, 2, 3, 4, 5, 6)  # type: ignore[arg-type]
