"""Work decomposition of the Triton kernel per GoogLeNet block (no GPU needed).

For each block and batch: FLOPs (the block's minimum), the FLOPs the kernel actually does
(reduce recomputed on each KxK item's halo, padded tiles and channel blocks), the number of work
items against the SMs, and the scratch the persistent grid allocates. Usage:

    python benchmarks/tiling_analysis.py [--sms 132] [--batches 1 32 256]
"""

from __future__ import annotations

import argparse

import triton

from fused_inception import GOOGLENET_BLOCKS, GOOGLENET_SPATIAL, googlenet_spec
from fused_inception.kernels.triton_inception import _work_items, default_config, reduce_chunks, scratch_shape


def analyse(name: str, n: int, sms: int, cfg=None) -> dict:
    """Counts for GoogLeNet block ``name`` at batch ``n`` with tile config ``cfg`` (default: the
    launcher's heuristic for that batch, used when autotuning is off)."""
    return {"block": name, **analyse_spec(googlenet_spec(name), GOOGLENET_SPATIAL[name], n, sms, cfg)}


def analyse_spec(s, hw: int, n: int, sms: int, cfg=None) -> dict:
    """``analyse`` for any block ``s`` on an ``hw`` x ``hw`` map. The FLOPs done count every
    tl.dot at its padded tile shape, input channels padded to whole ``bk`` chunks included, as
    tensor cores run them (benchmarks/work_count.py counts the same inside the interpreter)."""
    cfg = cfg or default_config(s, hw, hw, n, sms)
    bm = cfg.th * cfg.tw
    tiles = triton.cdiv(hw, cfg.th) * triton.cdiv(hw, cfg.tw)
    useful = 2 * n * hw * hw * (s.in_channels * (s.ch1x1 + s.ch3x3red + s.ch5x5red + s.pool_proj)
                                + s.k3**2 * s.ch3x3red * s.ch3x3 + s.k5**2 * s.ch5x5red * s.ch5x5)
    done = 0
    cin = triton.cdiv(s.in_channels, cfg.bk) * cfg.bk
    g = cfg.group(s)
    branches = zip((s.ch3x3red, s.ch5x5red), (s.ch3x3, s.ch5x5), (s.k3, s.k5), reduce_chunks(s, cfg))
    for cred, cout, k, br in branches:
        halo = triton.cdiv((cfg.th + k - 1) * (cfg.tw + k - 1), cfg.hc) * cfg.hc
        cr = triton.cdiv(cred, br) * br
        done += triton.cdiv(cout, cfg.bn * g) * 2 * halo * cin * cr
        done += triton.cdiv(cout, cfg.bn) * 2 * bm * k * k * cr * cfg.bn
    for cout in (s.ch1x1, s.pool_proj):
        done += triton.cdiv(cout, cfg.bn) * 2 * bm * cin * cfg.bn
    done *= n * tiles
    work = _work_items(s, cfg, n, hw, hw)
    items = work // (n * tiles)
    grid = min(work, sms * cfg.programs_per_sm)
    pix, chans = scratch_shape(s, cfg)
    scratch = grid * pix * chans * 2  # fp16
    return {"n": n, "tile": f"{cfg.th}x{cfg.tw}", "bn": cfg.bn, "items": items,
            "work": work, "waves": work / (sms * cfg.programs_per_sm), "useful_gflop": useful / 1e9,
            "overhead": done / useful, "scratch_mb": scratch / 2**20}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sms", type=int, default=132, help="SM count (H100 SXM / H200: 132)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    a = p.parse_args()
    print(f"{'block':5} {'n':>4} {'tile':>6} {'BN':>4} {'items':>5} {'work':>7} {'waves':>7} "
          f"{'GFLOP':>8} {'done/min':>8} {'scratch MB':>10}")
    for n in a.batches:
        for name in GOOGLENET_BLOCKS:
            r = analyse(name, n, a.sms)
            print(f"{r['block']:5} {r['n']:>4} {r['tile']:>6} {r['bn']:>4} {r['items']:>5} {r['work']:>7} "
                  f"{r['waves']:>7.2f} {r['useful_gflop']:>8.3f} {r['overhead']:>8.2f} {r['scratch_mb']:>10.1f}")


if __name__ == "__main__":
    main()
