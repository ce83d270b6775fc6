"""InceptionSpec and the GoogLeNet table, against the paper's own numbers."""

import pytest

from fused_inception import GOOGLENET_BLOCKS, GOOGLENET_SPATIAL, InceptionSpec, googlenet_spec

# Szegedy et al. (2014), "Going deeper with convolutions", Table 1, as printed: each inception
# block's output size (HxWxdepth) and #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj. The
# table gives no input depth: a block reads the output of the row above it (stem: 28x28x192), and
# a stride-2 max-pool (depth kept, size halved) stands before 4a and before 5a.
PAPER_STEM = (28, 192)
PAPER_TABLE_1 = {
    "3a": (28, 256, 64, 96, 128, 16, 32, 32),
    "3b": (28, 480, 128, 128, 192, 32, 96, 64),
    "4a": (14, 512, 192, 96, 208, 16, 48, 64),
    "4b": (14, 512, 160, 112, 224, 24, 64, 64),
    "4c": (14, 512, 128, 128, 256, 24, 64, 64),
    "4d": (14, 528, 112, 144, 288, 32, 64, 64),
    "4e": (14, 832, 256, 160, 320, 32, 128, 128),
    "5a": (7, 832, 256, 160, 320, 32, 128, 128),
    "5b": (7, 1024, 384, 192, 384, 48, 128, 128),
}
MAX_POOL_BEFORE = {"4a", "5a"}


def test_googlenet_table_matches_the_paper():
    """Each block's input depth and size derived from the row above (and the max-pools), its
    branch widths as printed."""
    assert list(GOOGLENET_BLOCKS) == list(PAPER_TABLE_1)
    size, depth = PAPER_STEM
    for name, (out_size, out_depth, *branches) in PAPER_TABLE_1.items():
        if name in MAX_POOL_BEFORE:
            size //= 2
        assert GOOGLENET_BLOCKS[name] == (depth, *branches), name
        assert GOOGLENET_SPATIAL[name] == size == out_size, name
        size, depth = out_size, out_depth


@pytest.mark.parametrize("name", list(GOOGLENET_BLOCKS))
def test_out_channels_chain(name):
    # The block's output depth is the paper's printed one, and it is what the next block reads
    # (a max-pool between 3b and 4a, and between 4e and 5a, keeps the depth: 480 -> 480, 832 -> 832).
    names = list(GOOGLENET_BLOCKS)
    spec = googlenet_spec(name)
    assert spec.out_channels == PAPER_TABLE_1[name][1]
    i = names.index(name)
    if i + 1 < len(names):
        assert spec.out_channels == googlenet_spec(names[i + 1]).in_channels


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
