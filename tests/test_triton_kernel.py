"""The one-launch Triton kernel, run by Triton's interpreter on CPU tensors.

Every case: random parameters and inputs, output pre-filled with NaN (an unwritten element
fails), relative error against the fp64 oracle within the dtype's tolerance.
"""

import json
from dataclasses import asdict, replace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fused_inception.kernels.triton_inception as tk
import fused_inception.kernels.tuning as tuning
from fused_inception import GOOGLENET_BLOCKS, InceptionSpec, __version__, googlenet_spec
from fused_inception.kernels.triton_inception import inception_forward_triton
from fused_inception.kernels.tuning import TileConfig, schedule_for

from .helpers import (
    DTYPES,
    check_fused,
    make_block,
    make_input,
    nan_output,
    oracle,
    rel_err,
    requires_interpreter,
    tolerance,
)

pytestmark = requires_interpreter



def run_kernel(block, x, config=None, **kw):
    """Launch the kernel directly into a NaN-filled output (the launcher NaN-fills its workspaces
    in the interpreter), with the heuristic config unless one is given."""
    n, _, h, w = x.shape
    cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    out, _ = nan_output(n, block.spec.out_channels, h, w, x.dtype, channels_last=cl)
    config = config or tuning.default_config(block.spec, n, h, w, dtype=x.dtype)
    return inception_forward_triton(x, block.packed_weights(x.dtype), block.spec, config, out=out, **kw)


def check(spec, n, h, w, dtype=torch.float32, layout="nchw", bias_shift=0.0, specials=False, **kw):
    return check_fused(lambda block, x: run_kernel(block, x, **kw), spec, n, h, w, dtype, layout,
                       bias_shift=bias_shift, specials=specials)


# The nine GoogLeNet blocks at small maps; dtype and layout rotate so each appears several times.
_ROT = [("fp16", "channels_last"), ("fp32", "nchw"), ("bf16", "sliced")]


@pytest.mark.fast_cases("3a-torchvision-fp16-channels_last", "3a-paper-fp32-nchw")
@pytest.mark.parametrize("name,variant,dt,layout", [
    (name, variant, *_ROT[i % 3])
    for i, (name, variant) in enumerate((n, v) for n in GOOGLENET_BLOCKS for v in ("torchvision", "paper"))
    if i % 2 == 0 or name in ("3a", "5b")
], ids=lambda v: str(v))
def test_googlenet_blocks(name, variant, dt, layout):
    h, w = (7, 7) if name.startswith("5") else (6, 5)
    check(googlenet_spec(name, variant), 1, h, w, DTYPES[dt], layout)


@pytest.mark.fast_cases("1x1-ch1-1-1-1-1-1-1", "5x5-ch33-19-17-7-1-3-33", "13x17-ch19-5-3-33-7-19-1")
@pytest.mark.parametrize("channels", [
    (1, 1, 1, 1, 1, 1, 1), (7, 7, 7, 7, 7, 7, 7), (19, 5, 3, 33, 7, 19, 1), (33, 19, 17, 7, 1, 3, 33),
], ids=lambda c: "ch" + "-".join(map(str, c)))
@pytest.mark.parametrize("hw", [(1, 1), (5, 5), (13, 17)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_odd_shapes(channels, hw):
    check(InceptionSpec(*channels, k3=3, k5=5), 2, *hw)


@pytest.mark.fast_cases("k1-k7", "k3-k5")
@pytest.mark.parametrize("k3,k5", [(1, 1), (3, 3), (5, 5), (7, 7), (1, 7), (7, 3), (3, 5), (5, 1)],
                         ids=lambda k: f"k{k}")
def test_kernel_sizes(k3, k5):
    check(InceptionSpec(9, 4, 6, 8, 3, 5, 4, k3=k3, k5=k5), 2, 9, 11)


@pytest.mark.fast_cases("nobias-nobn-norelu", "bias-bn-norelu")
@pytest.mark.parametrize("relu", [True, False], ids=["relu", "norelu"])
@pytest.mark.parametrize("bn", [True, False], ids=["bn", "nobn"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_variants(relu, bn, bias):
    check(InceptionSpec(10, 4, 6, 8, 3, 5, 4, k3=3, k5=5, relu=relu, batch_norm=bn, bias=bias), 2, 7, 9)


@pytest.mark.fast_cases("fp32-nchw", "fp16-channels_last", "bf16-sliced")
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "sliced"])
@pytest.mark.parametrize("dt", list(DTYPES))
def test_dtypes_and_layouts(dt, layout):
    check(InceptionSpec(20, 8, 12, 16, 4, 8, 8, k3=3, k5=5), 2, 9, 10, DTYPES[dt], layout)


@pytest.mark.fast_cases("5")
@pytest.mark.parametrize("k", [3, 5, 7])
def test_halo_is_zero_padded_after_relu(k):
    # Strongly positive biases: relu(bias) != 0, so padding the halo with the reduce of a zero
    # input (instead of zeros) changes every border pixel.
    check(InceptionSpec(8, 4, 6, 8, 3, 5, 4, k3=k, k5=k, bias=True, batch_norm=False), 2, 9, 9, bias_shift=3.0)


@pytest.mark.fast_cases("m32-n32-k16-kr16-split3-progs1", "m16-n64-k32-kr32-split2-progsNone")
@pytest.mark.parametrize("cfg,max_programs", [
    (TileConfig(block_m=16, block_n=16, block_k=16, block_kr=16), 3),
    (TileConfig(block_m=32, block_n=32, block_k=16, block_kr=16, split_k=3), 1),
    (TileConfig(block_m=16, block_n=64, block_k=32, block_kr=32, split_k=2), None),
    (TileConfig(block_m=64, block_n=16, block_k=16, block_kr=16, split_k=5), 5),
], ids=lambda c: (f"m{c.block_m}-n{c.block_n}-k{c.block_k}-kr{c.block_kr}-split{c.split_k}"
                  if isinstance(c, TileConfig) else f"progs{c}"))
def test_tile_configs_and_persistent_grid(cfg, max_programs):
    # Channel counts above the block sizes (several column blocks per branch, ragged tails), tiles
    # that cross image boundaries (batch 2), split reductions; max_programs below the work count
    # makes programs loop over several items.
    check(InceptionSpec(24, 20, 18, 36, 17, 20, 17, k3=3, k5=5), 2, 9, 11, config=cfg, max_programs=max_programs)


@pytest.mark.fast_cases("fp16", "bf16")  # bf16: the interpreter's own max-pool path
@pytest.mark.parametrize("dt", ["fp32", "fp16", "bf16"])
def test_nan_and_inf_propagate_like_the_reference(dt):
    check(InceptionSpec(8, 4, 6, 8, 3, 5, 4, k3=3, k5=5), 2, 9, 9, DTYPES[dt], specials=True)


def test_bf16_max_pool_compares_values_not_bits():
    # Triton 3.9's interpreter compares bf16 tl.maximum as raw bits (max(-1, 0.5) = -1, and -inf
    # padding beats every value), so the pool branch is wrong or NaN while the others stay right.
    spec = InceptionSpec(8, 4, 6, 8, 3, 5, 4, relu=False)
    block = make_block(spec, dtype=torch.bfloat16)
    x = make_input(2, 8, 6, 7, dtype=torch.bfloat16)
    assert (x < 0).any() and (x > 0).any()
    pool = slice(spec.out_channels - spec.pool_proj, None)
    err = rel_err(run_kernel(block, x)[:, pool], oracle(block, x)[:, pool])
    assert err < tolerance(torch.bfloat16), f"pool branch relative error {err:.3g}"


def test_output_memory_format_follows_conv():
    block = make_block(InceptionSpec(8, 4, 6, 8, 3, 5, 4))
    cl = make_input(1, 8, 5, 5, layout="channels_last")
    assert block(cl).is_contiguous(memory_format=torch.channels_last)
    assert block(make_input(1, 8, 5, 5)).is_contiguous()
    assert block(make_input(1, 8, 5, 5, layout="sliced")).is_contiguous()


class _OpLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_one_launch_per_forward_and_no_torch_compute(monkeypatch):
    block = make_block(googlenet_spec("3a"))
    x = make_input(2, 192, 4, 4, layout="channels_last")
    with torch.no_grad():
        block(x)  # packs the weights (cached afterwards)
        launches = []
        real_run = tk.inception_fwd_kernel.run

        def counting_run(*args, **kwargs):
            launches.append(kwargs.get("grid"))
            return real_run(*args, **kwargs)

        monkeypatch.setattr(tk.inception_fwd_kernel, "run", counting_run)
        with _OpLog() as log:
            out = block(x)
    assert len(launches) == 1
    compute = [op for op in log.ops if any(k in op for k in ("conv", "cat", "max_pool", "mm", "relu", "add"))]
    assert compute == [], compute  # no hidden PyTorch compute: only allocations around the launch
    assert out.shape == (2, 256, 4, 4)


def test_weights_repacked_when_parameters_change():
    block = make_block(InceptionSpec(8, 4, 6, 8, 3, 5, 4))
    x = make_input(1, 8, 5, 5)
    with torch.no_grad():
        a = block(x)
        block.branch2[1].conv.weight.mul_(2.0)  # in place
        b = block(x)
        assert rel_err(b, oracle(block, x)) < tolerance(torch.float32) and not torch.allclose(a, b)
        sd = {k: v.clone() for k, v in block.state_dict().items()}
        sd["branch4.1.bn.running_mean"] += 1.0
        block.load_state_dict(sd)
        c = block(x)
        assert rel_err(c, oracle(block, x)) < tolerance(torch.float32) and not torch.allclose(b, c)


def test_autotune_times_candidates_once_per_key_and_caches_on_disk(monkeypatch, tmp_path):
    monkeypatch.setenv("FUSED_INCEPTION_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tuning, "_TUNED", {})
    spec = InceptionSpec(8, 4, 6, 8, 3, 5, 4)
    block = make_block(spec)
    cands = [TileConfig(block_m=16, block_n=16, block_k=16, block_kr=16),
             TileConfig(block_m=32, block_n=32, block_k=16, block_kr=16)]
    timed = []

    def fake_bench(fn):
        fn()  # each candidate really launches (and must not raise)
        timed.append(len(timed))
        return [2.0, 1.0][len(timed) - 1]  # the second candidate is "faster"

    x = make_input(3, 8, 5, 5)
    packed = block.packed_weights(x.dtype)
    assert tuning.autotune(x, packed, spec, cands, bench=fake_bench) == cands[1]
    assert tuning.autotune(make_input(4, 8, 5, 5), packed, spec, cands, bench=fake_bench) == cands[1]  # same bucket
    assert timed == [0, 1]
    monkeypatch.setattr(tuning, "_TUNED", {})  # a new process: the result comes from disk
    assert tuning.autotune(x, packed, spec, cands, bench=lambda fn: pytest.fail("re-tuned")) == cands[1]
    assert tuning._tune_key(make_input(5, 8, 5, 5), spec) != tuning._tune_key(x, spec)  # another bucket


def _entry(**change):
    return lambda key, entry: json.dumps({key: {**entry, **change}})


def _other_version(key, entry):
    other = key.replace(f"|fused_inception{__version__}|", "|fused_inception0.0.1|")
    assert other != key, "the tuning key names the package version"
    return json.dumps({other: entry})


def _without(field):
    return lambda key, entry: json.dumps({key: {k: v for k, v in entry.items() if k != field}})


# Cache files this version must not trust: each is ignored (re-tuned, then overwritten), never raises.
BAD_CACHES = {
    "not-json": lambda key, entry: '{"truncated',
    "top-level-list": lambda key, entry: "[]",
    "deeply-nested": lambda key, entry: "[" * 100_000,
    "entry-not-a-dict": lambda key, entry: json.dumps({key: list(entry.values())}),
    "unknown-field": _entry(tile=4),
    "missing-field": _without("block_kr"),
    "float-tile": _entry(block_m=16.0),
    "string-tile": _entry(block_n="16"),
    "bool-field": _entry(split_k=True),
    "zero-tile": _entry(block_n=0),
    "negative-tile": _entry(block_k=-16),
    "non-power-of-two-tile": _entry(block_kr=24),
    "tile-below-dot-minimum": _entry(block_m=8),
    "column-block-too-wide": _entry(block_n=256),
    "non-power-of-two-warps": _entry(num_warps=3),
    "zero-stages": _entry(num_stages=0),
    "negative-programs": _entry(programs_per_sm=-1),
    "zero-splits": _entry(split_k=0),
    "other-package-version": _other_version,
}


@pytest.mark.parametrize("content", list(BAD_CACHES.values()), ids=list(BAD_CACHES))
def test_autotune_ignores_malformed_or_outdated_cache(monkeypatch, tmp_path, content):
    monkeypatch.setenv("FUSED_INCEPTION_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tuning, "_TUNED", {})
    spec = InceptionSpec(8, 4, 6, 8, 3, 5, 4)
    x = make_input(1, 8, 5, 5)
    cands = [TileConfig(block_m=16, block_n=16, block_k=16, block_kr=16),
             TileConfig(block_m=32, block_n=32, block_k=16, block_kr=16, split_k=2)]
    key = tuning._tune_key(x, spec)
    path = tuning._cache_file()
    path.write_text(content(key, asdict(cands[0])))  # built from the slower candidate: trusting it shows
    times = iter([2.0, 1.0])
    packed = make_block(spec).packed_weights(x.dtype)
    assert tuning.autotune(x, packed, spec, cands, bench=lambda fn: next(times)) == cands[1]
    assert next(times, None) is None, "not re-tuned"
    assert json.loads(path.read_text())[key] == asdict(cands[1])


def test_heuristic_splits_reductions_only_where_the_items_would_not_fill_the_gpu():
    spec = googlenet_spec("4d")
    big = tuning.default_config(spec, 256, 14, 14, sms=132)
    small = tuning.default_config(spec, 1, 14, 14, sms=132)
    assert big.split_k == 1 and small.split_k > 1
    assert len(schedule_for(spec, 1, 14, 14, small).items) >= 132
    assert len(schedule_for(spec, 1, 14, 14, replace(small, split_k=1)).items) < 132
    assert small in tuning.candidate_configs(spec, 1, 14, 14)


@pytest.mark.parametrize("hw,dt,vec", [((8, 6), "fp16", 8), ((14, 14), "fp16", 4), ((14, 14), "fp32", 4),
                                       ((7, 7), "fp16", 1), ((9, 10), "fp32", 2)],
                         ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v))
def test_nchw_input_loads_pixel_vectors_across_images(hw, dt, vec):
    # NCHW x is read as vectors of `vec` pixels (the kernel's alignment hints and mask test rest on
    # the launcher's conditions); 16-row tiles at batch 3 cross image boundaries mid-tile.
    spec = InceptionSpec(16, 8, 12, 16, 4, 8, 8, k3=3, k5=5)
    x = make_input(3, 16, *hw, dtype=DTYPES[dt])
    assert tk._pixel_vector(x) == vec
    assert tk._pixel_vector(x.contiguous(memory_format=torch.channels_last)) == 1
    check(spec, 3, *hw, DTYPES[dt], "nchw", config=TileConfig(block_m=16, block_n=16, block_k=16, block_kr=16))
