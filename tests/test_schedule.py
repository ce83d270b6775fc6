"""The kernel's work table, statically (dependency order, halo coverage, splits, column blocks,
items at batch 1), and the real kernel in the interpreter for what a table cannot show:
back-to-back launches with no host reset, bit-identical split results, NaN kept in its image.
The protocol under interleavings the interpreter never runs: tests/test_protocol.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

import fused_inception.kernels.triton_inception as tk  # noqa: E402
from fused_inception import GOOGLENET_BLOCKS, GOOGLENET_SPATIAL, InceptionSpec, googlenet_spec  # noqa: E402
from fused_inception.kernels.schedule import C3, C5, KINDS, WIDTHS, P, Q  # noqa: E402
from fused_inception.kernels.tuning import H100_SMS, MIN_ITEMS, TileConfig, default_config, schedule_for  # noqa: E402

from .helpers import make_block, make_input, oracle, rel_err, requires_interpreter, tolerance  # noqa: E402
from .protocol_sim import CPU, SHAPES, Sim, _bm16, _cfg, record_launch, static_faults  # noqa: E402


def _static_cases():
    cases = [pytest.param(*s[1:], id=s[0]) for s in SHAPES]
    for name in GOOGLENET_BLOCKS:
        hw = GOOGLENET_SPATIAL[name]
        for n in (1, 2):
            spec = googlenet_spec(name, "paper")
            cases.append(pytest.param(spec, n, hw, hw, None, id=f"{name}-paper-n{n}-{hw}x{hw}"))
    return cases


@pytest.mark.parametrize("spec,n,h,w,cfg", _static_cases())
def test_static_table(spec, n, h, w, cfg):
    """Every dependency has a smaller ticket than its consumer (the deadlock-freedom argument), the
    dependency range of a KxK item covers every tile of the exact halo its chunks read (and its
    ends are tiles actually read, so no consumer waits longer than it must), the launch state has
    a word for every ready count and split slot, and each item's splits cut its reduction into
    consecutive, non-empty chunk ranges."""
    cfg = _cfg(spec, n, h, w, cfg)
    launch = record_launch(spec, n, h, w, cfg, max_programs=H100_SMS * cfg.programs_per_sm)
    rows = launch.rows()
    assert static_faults(launch) == []
    sim = Sim(launch)
    sched = schedule_for(spec, n, h, w, cfg)
    # Tight ends: the first and last tile of each dependency range are read.
    by_item = {}
    for r in rows:
        if r[0] >= C3:
            key = (r[0], r[1], r[2])
            tiles = {int(t) for rr in sim.read_set(r).values() for t in np.unique(rr // sim.bm)}
            by_item.setdefault(key, [r[7], r[8], set()])[2].update(tiles)
    for (kind, tile, _), (lo, hi, tiles) in by_item.items():
        assert tile in tiles and min(tiles) == lo and max(tiles) == hi, (KINDS[kind], tile, lo, hi, sorted(tiles))
    # State words and split structure.
    assert launch.state_size == 2 + launch.n_tiles + sched.n_slots
    assert all(0 <= r[1] < launch.n_tiles for r in rows)
    splits = {}
    for i, r in enumerate(rows):
        kind, tile, c0, _, split, n_splits, slot = r[:7]
        assert (slot >= 0) == (n_splits > 1) and slot < sched.n_slots and n_splits <= launch.MAX_SPLITS
        splits.setdefault((kind, tile, c0), []).append((split, n_splits, slot, r[9], r[10], i))
    for (kind, _, _), parts in splits.items():
        assert [p[0] for p in parts] == list(range(parts[0][1])), "splits out of order or missing"
        assert len({p[1:3] for p in parts}) == 1, "the splits of one item disagree on n_splits or slot"
        assert [p[5] for p in parts] == list(range(parts[0][5], parts[0][5] + len(parts))), "splits not consecutive"
        bounds = [parts[0][3]] + [p[4] for p in parts]
        assert bounds[0] == 0 and bounds[-1] == sched.k_chunks(kind)
        assert all(p[3] < p[4] for p in parts) and all(a[4] == b[3] for a, b in zip(parts, parts[1:]))
    assert len({p[0][2] for p in splits.values() if p[0][2] >= 0}) == sched.n_slots
    # Every tile has every item kind; the ready target is its number of P column blocks.
    for kind in KINDS:
        assert {t for (k, t, _) in splits if KINDS[k] == kind} == set(range(launch.n_tiles))
    assert launch.TILE_TARGET == len({c0 for (k, t, c0) in splits if k == P and t == 0})


@pytest.mark.parametrize("variant", ["torchvision", "paper"])
@pytest.mark.parametrize("name", list(GOOGLENET_BLOCKS))
def test_googlenet_batch1_offers_enough_items(name, variant):
    """At batch 1 every GoogLeNet block offers at least MIN_ITEMS (100) work items with the default
    config on a 132-SM GPU: split reductions make up for the few tiles of a small map."""
    spec, hw = googlenet_spec(name, variant), GOOGLENET_SPATIAL[name]
    cfg = default_config(spec, 1, hw, hw, sms=H100_SMS)
    items = len(schedule_for(spec, 1, hw, hw, cfg).items)
    assert MIN_ITEMS == 100 and items >= MIN_ITEMS, f"{name} ({variant}): {items} items with {cfg}"


@pytest.mark.parametrize("spec,n,h,w,cfg", _static_cases())
def test_column_blocks(spec, n, h, w, cfg):
    """Column blocks are 16/32/64/128 wide (the kernel's specialisations; a block wider than
    block_n would be skipped by the kernel), contiguous from channel 0, and cover each branch
    with less than 16 channels of padding."""
    cfg = _cfg(spec, n, h, w, cfg)
    sched = schedule_for(spec, n, h, w, cfg)
    branch = {P: spec.ch1x1 + spec.ch3x3red + spec.ch5x5red, Q: spec.pool_proj, C3: spec.ch3x3, C5: spec.ch5x5}
    for kind, cols in branch.items():
        for tile in range(sched.n_tiles):
            blocks = sorted({(r[2], r[3]) for r in sched.items if r[0] == kind and r[1] == tile})
            widths = [wd for _, wd in blocks]
            assert all(wd in WIDTHS and wd % 16 == 0 and wd <= cfg.block_n for wd in widths), (KINDS[kind], blocks)
            assert [c0 for c0, _ in blocks] == [0, *np.cumsum(widths)[:-1].tolist()], (KINDS[kind], blocks)
            assert 0 <= sum(widths) - cols < 16, (KINDS[kind], cols, blocks)


# -- the real kernel, in the interpreter ------------------------------------------------------------
KSPEC = InceptionSpec(8, 4, 6, 8, 3, 5, 4, k3=3, k5=5)


def _launch_real(block, x, cfg, max_programs=None):
    out = torch.full((x.shape[0], block.spec.out_channels, *x.shape[2:]), float("nan"), dtype=x.dtype)
    return tk.inception_forward_triton(x, block.packed_weights(x.dtype), block.spec, cfg, out=out,
                                       max_programs=max_programs)


@requires_interpreter
def test_back_to_back_launches():
    """Two launches with no host reset in between: both right, bit-identical with split
    reductions, and the shared launch state all zero after each."""
    block = make_block(KSPEC)
    x = make_input(2, KSPEC.in_channels, 5, 5)
    cfg = _bm16(split_k=2)
    sched = schedule_for(KSPEC, 2, 5, 5, cfg)
    assert sched.n_slots > 0 and sched.n_tiles > 2
    ref = oracle(block, x)
    outs = []
    for _ in range(2):
        outs.append(_launch_real(block, x, cfg))
        state = tk.launch_state(CPU, sched.state_size)
        assert not state.any(), f"launch state left {state.tolist()}"
        assert not outs[-1].isnan().any()
        assert rel_err(outs[-1], ref) < tolerance(torch.float32)
    assert torch.equal(outs[0], outs[1])


@requires_interpreter
@pytest.mark.parametrize("block_m", [16, 64], ids=["bm16", "bm64"])
@pytest.mark.parametrize("where", ["all", "last-row"], ids=["image0-nan", "image0-last-row-nan"])
def test_nan_stays_in_its_image(where, block_m):
    """Tiles hold pixels of both images (5x5 maps, 16- or 64-row tiles): NaN in image 0, all of
    it or only its last row (flat neighbour of image 1's first row, inside a 5x5 halo's reach),
    never reaches image 1, and image 0 is NaN exactly where the reference is."""
    block = make_block(KSPEC)
    x = make_input(2, KSPEC.in_channels, 5, 5)
    if where == "all":
        x[0] = float("nan")
    else:
        x[0, :, -1] = float("nan")
    out = _launch_real(block, x, _bm16(split_k=2) if block_m == 16 else TileConfig(block_m=64, block_n=16,
                                                                                    block_k=16, block_kr=16))
    ref = oracle(block, x)
    assert out[1].isfinite().all(), "NaN crossed into image 1"
    assert rel_err(out[1], ref[1]) < tolerance(torch.float32)
    assert torch.equal(out[0].isnan(), ref[0].isnan())
    keep = ~ref[0].isnan()
    if keep.any():
        assert rel_err(out[0][keep], ref[0][keep]) < tolerance(torch.float32)
    assert not tk.launch_state(CPU, 1).any()
