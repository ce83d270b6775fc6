"""benchmarks/perf_model_graph.py: the graph kernel's model simulates every row of the launcher's
own table, its work and byte counts agree with the blocks' (graph.macs, the minimum bytes), the
peers run the same convs, and the end-to-end network is the one fused_inception.models builds.
No timing: these check counts, not predictions."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from fused_inception import googlenet_spec
from fused_inception.graph import FID_BLOCKS, INCEPTION_V3_BLOCKS
from fused_inception.kernels.tuning import default_graph_config, graph_schedule_for

from .helpers import bench_module

pg = bench_module("perf_model_graph")
pm = bench_module("perf_model")
K = bench_module("counting")
H100, H200 = pm.GPUS["h100"], pm.GPUS["h200"]
GRAPHS = {**INCEPTION_V3_BLOCKS, **{f"fid-{k}": v for k, v in FID_BLOCKS.items() if v[0].kind.startswith("fid")}}


@pytest.mark.parametrize("name", list(GRAPHS))
def test_counts_are_the_blocks(name):
    """Every row is simulated; the useful MACs are graph.macs exactly and the issued ones (padded
    tiles, columns and chunks) no fewer; the loads read x and the weights at least once, the stores
    write the output at least once, and DRAM moves at least the minimum bytes. Batch 1 (split
    reductions) and 3 (tiles across images)."""
    graph, hw = GRAPHS[name]
    for n in (1, 3):
        got = pg.kernel(graph, n, hw, hw, torch.float16, H100, pm.OPTIMISTIC)
        cfg = default_graph_config(graph, n, hw, hw, H100.sms, torch.float16)
        sched = graph_schedule_for(graph, n, hw, hw, cfg, H100.sms * cfg.programs_per_sm)
        assert got["schedule"] == sched and got["items"] == got["simulated"] == len(sched.items)
        assert got["macs"] == graph.macs(n, hw, hw)
        assert got["issued_flops"] >= 2 * got["macs"]
        least = K.block_min_bytes(graph, n, hw, hw, 2)
        assert got["load_bytes"] >= least["input"] + least["weights"]
        assert got["store_bytes"] >= least["output"]
        assert got["dram_bytes"] >= least["total"]
        assert got["critical_us"] <= got["makespan_us"] + 1e-9 <= got["gpu_us"] + 1e-9


def test_a_chain_waits_for_its_producers():
    """One program runs every item back to back; with a program per item, A's 3x3 chain (1x1,
    3x3, 3x3) makes the critical path: longer than without the waits and than the chain's
    shortest items added up."""
    graph, hw = INCEPTION_V3_BLOCKS["Mixed_5b"]
    cfg = default_graph_config(graph, 1, hw, hw, H100.sms, torch.float16)
    sched = graph_schedule_for(graph, 1, hw, hw, cfg, 8)
    costs = pg._costs(sched, cfg, H100, pm.OPTIMISTIC, 2, 8)
    assert len(costs) == len(sched.items)
    serial = pg.simulate(sched, costs, 1)
    assert serial == pytest.approx(sum(d + c / row[5] for row, (d, c, *_) in zip(sched.items, costs)))
    wide = pg.simulate(sched, costs, len(sched.items))
    free = pm.simulate(sched.items, costs, len(sched.items), lambda r: (), lambda r: None)
    assert free == pytest.approx(max(d + c for d, c, *_ in costs))
    chain = [i for i, node in enumerate(graph.nodes) if node.name.startswith("branch3x3dbl")]
    shortest = sum(min(c[0] for row, c in zip(sched.items, costs) if row[0] == i) for i in chain)
    assert max(free, shortest) < wide < serial


@pytest.mark.parametrize("name", list(GRAPHS))
def test_peers_run_the_same_convs(name):
    graph, hw = GRAPHS[name]
    ks = pm._peer_kernels(graph, 2, hw, hw, 2, False)
    for kind in ("eager", "compile"):
        convs = [k for k in ks[kind] if k[0] == "conv"]
        assert len(convs) == len(graph.convs)
        assert sum(m * n * k for _, m, n, k, _ in convs) == graph.macs(2, hw, hw)


def test_googlenet_peer_kernels_through_the_graph():
    """GoogLeNet's block goes through the same code: 20 eager kernels for a torchvision block
    (6 convs, their BN and ReLU, the pool, the concat), 10 compiled."""
    ks = pm._peer_kernels(googlenet_spec("3a"), 1, 28, 28, 2, False)
    assert (len(ks["eager"]), len(ks["compile"])) == (20, 10)
    assert ks["host"] == {"eager": 20, "compile": 10}


@pytest.mark.parametrize("fid", [False, True], ids=["inception_v3", "fid"])
def test_network_is_the_models_network(fid):
    """The end-to-end MACs (stem, eleven blocks, fc) are those of fused_inception.models'
    network at 299x299, counted with forward hooks (FID: no fc; its resize is not a conv)."""
    import fused_inception as fi

    rows = pg.predict_blocks(H100, pm.OPTIMISTIC, batches=(1,), fid=fid)
    assert [r["block"] for r in rows] == list(INCEPTION_V3_BLOCKS)
    net = pg.predict_network(rows, 1, H100, pm.OPTIMISTIC, fid)
    model = fi.models.fid_inception_v3() if fid else fi.models.inception_v3(aux_logits=False)
    assert 2 * net["macs"] == K.model_flops(model.eval(), torch.zeros(1, 3, 299, 299))
    assert net["best_peer"] == min(net["peers"][k] for k in ("eager", "graphs", "compile"))
    assert net["kernels"]["fused"] < net["kernels"]["compile"] < net["kernels"]["eager"]
    assert 0 < net["floor"] < net["fused"]


def test_h200_changes_only_memory_bound_parts():
    graph, hw = INCEPTION_V3_BLOCKS["Mixed_5b"]
    small = [pg.kernel(graph, 1, hw, hw, torch.float16, g, pm.OPTIMISTIC)["gpu_us"] for g in (H100, H200)]
    assert small[0] == small[1]  # batch 1: latency and items, not DRAM
    pe = [pm.peers(graph, 50, hw, hw, torch.float16, g, pm.OPTIMISTIC)["graphs"] for g in (H100, H200)]
    assert pe[1] < pe[0]


def test_cli(capsys):
    assert pg.main(["--gpu", "h200", "--params", "pessimistic", "--batches", "1", "--no-what-ifs", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "PREDICTIONS" in out and "H200, pessimistic parameters" in out and "| Mixed_7c | E | 1 |" in out
    assert "end to end" in out and "what-ifs" not in out


def test_pool_round_trips_follow_the_kernel(monkeypatch):
    """A conv of a 3x3 pool is priced a round trip per chunk where the kernel unrolls the taps
    (``triton_graph.pool_unrolled``: 64 x 32 chunks) and one per tap and chunk where it loops
    (64 x 64); nothing else changes."""
    from fused_inception.kernels.graph_schedule import SRC_POOL

    assert pg.pool_unrolled(64, 32) and not pg.pool_unrolled(64, 64) and not pg.pool_unrolled(128, 32)
    graph, hw = INCEPTION_V3_BLOCKS["Mixed_6e"]
    cfg = replace(default_graph_config(graph, 50, hw, hw, H100.sms, torch.float16), block_k=32)
    grid = H100.sms * cfg.programs_per_sm
    sched = graph_schedule_for(graph, 50, hw, hw, cfg, grid)
    pooled = [sched.nodes[row[0]][pg.NODE["src"]] == SRC_POOL for row in sched.items]
    assert any(pooled)
    fast = pg._costs(sched, cfg, H100, pm.OPTIMISTIC, 2, grid)
    monkeypatch.setattr(pg, "pool_unrolled", lambda rows, chans: False)
    slow = pg._costs(sched, cfg, H100, pm.OPTIMISTIC, 2, grid)
    for p, f, s in zip(pooled, fast, slow):
        assert (f[0] < s[0]) if p else (f == s)


def test_fp16_pipelining_follows_alignment(monkeypatch):
    """fp16 K-loops are multi-buffered only where the launcher's ALIGN makes the loads 16-byte
    cp.async (every Inception-v3 table is aligned): an unaligned table prices every conv that
    reads x or a workspace slower (a round trip per chunk), and nothing else changes (the pooled
    loops and pool items run one stage either way)."""
    from fused_inception.kernels.graph_schedule import CONV, SRC_POOL, GraphSchedule

    graph, hw = INCEPTION_V3_BLOCKS["Mixed_6e"]
    cfg = default_graph_config(graph, 50, hw, hw, H100.sms, torch.float16)
    assert cfg.num_stages > 1
    grid = H100.sms * cfg.programs_per_sm
    sched = graph_schedule_for(graph, 50, hw, hw, cfg, grid)
    assert sched.aligned(8)
    looped = [sched.nodes[row[0]][pg.NODE["kind"]] == CONV and sched.nodes[row[0]][pg.NODE["src"]] != SRC_POOL
              and row[10] - row[9] > 1 for row in sched.items]
    assert any(looped) and not all(looped)
    fast = pg._costs(sched, cfg, H100, pm.OPTIMISTIC, 2, grid)
    monkeypatch.setattr(GraphSchedule, "aligned", lambda self, vec: False)
    slow = pg._costs(sched, cfg, H100, pm.OPTIMISTIC, 2, grid)
    for lp, f, s in zip(looped, fast, slow):
        assert (f[0] < s[0]) if lp else (f == s)
