"""benchmarks/perf_model.py and calibrate.py: the peer model holds to KernelBench's measured times,
the kernel model reads the launcher's own work table (planned for the grid it simulates) and counts
the bytes tiling_analysis.load_bytes counts, v3's historical counts are the ones NOTES.md records,
and the calibration script starts (or says why not) without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fused_inception import GOOGLENET_BLOCKS, GOOGLENET_SPATIAL, googlenet_spec
from fused_inception.kernels.tuning import default_config, schedule_for

from .helpers import BENCH, bench_module

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()


pm = bench_module("perf_model")
H100 = pm.GPUS["h100"]


@pytest.mark.parametrize("prm", [pm.OPTIMISTIC, pm.PESSIMISTIC], ids=lambda p: p.name)
def test_peer_model_reproduces_kernelbench(prm):
    check = pm.kernelbench_check(prm)
    for name, ms in (("eager", 8.77), ("compile", 5.16)):
        assert check[name]["measured_ms"] == ms
        assert abs(check[name]["predicted_ms"] / ms - 1) <= 0.25, check


def test_kernelbench_check_can_fail():
    """A slower machine than either set (half the bandwidth reached, a third of the conv rate)
    must miss KernelBench's times: the check is not vacuous."""
    check = pm.kernelbench_check(replace(pm.OPTIMISTIC, stream_eff=0.5, conv_eff=0.25))
    assert not check["eager"]["ok"] and not check["compile"]["ok"]


def test_v4_model_consumes_the_launchers_table():
    spec, hw = googlenet_spec("4d"), GOOGLENET_SPATIAL["4d"]
    base = default_config(spec, 1, hw, hw, H100.sms, torch.float16)
    sched = schedule_for(spec, 1, hw, hw, base, H100.sms * base.programs_per_sm)
    got = pm.kernel_v4(spec, 1, hw, hw, torch.float16, H100, pm.OPTIMISTIC)
    assert got["schedule"] == sched and got["items"] == len(sched.items)
    assert got["issued_flops"] == sum(2 * m * n * k for m, n, k in map(sched.item_mnk, sched.items))
    assert got["critical_us"] <= got["makespan_us"] + 1e-9
    # Another config is another table, and another prediction.
    other = replace(base, split_k=1)
    got_other = pm.kernel_v4(spec, 1, hw, hw, torch.float16, H100, pm.OPTIMISTIC, other)
    assert got_other["items"] == len(schedule_for(spec, 1, hw, hw, other).items) < got["items"]
    assert got_other["gpu_us"] != got["gpu_us"]


def test_v4_table_is_planned_for_the_simulated_grid():
    """The launcher builds its table for its program count (KxK items lag about a wave of
    programs behind their producers): the model simulates that table, not another GPU's."""
    spec, hw = googlenet_spec("3a"), GOOGLENET_SPATIAL["3a"]
    cfg = default_config(spec, 32, hw, hw, H100.sms, torch.float16)
    small = replace(H100, sms=33)
    got = pm.kernel_v4(spec, 32, hw, hw, torch.float16, small, pm.OPTIMISTIC, cfg)
    assert got["schedule"] == schedule_for(spec, 32, hw, hw, cfg, 33 * cfg.programs_per_sm)
    assert got["schedule"] != schedule_for(spec, 32, hw, hw, cfg)  # the H100's lag is longer
    assert got["grid"] == 33 * cfg.programs_per_sm
    # The table's own lag is the schedule now: no what-if reorders it.
    names = {f.name for f in pm.fields(pm.Params)}
    assert "c_late" not in names and all(k in names for _, change in pm.WHAT_IFS for k in change)


@pytest.mark.parametrize(("block", "n", "dtype"), [("3a", 1, torch.float16), ("4d", 256, torch.float16),
                                                   ("5b", 32, torch.float16), ("4e", 1, torch.float32)])
def test_v4_bytes_agree_with_load_bytes(block, n, dtype):
    """The model sums tiling_analysis's per-item loads (the interpreter's count: test_benchmarks.py)
    with the dtype's element size, to exactly what load_bytes reports, split partials included;
    with every pool tap from L2 (pessimistic) the L2 traffic adds only the stores: a few % once the
    batch fills the GPU."""
    ta = bench_module("tiling_analysis")
    spec, hw = googlenet_spec(block), GOOGLENET_SPATIAL[block]
    elem = torch.empty((), dtype=dtype).element_size()
    got = pm.kernel_v4(spec, n, hw, hw, dtype, H100, pm.PESSIMISTIC)
    counted = sum(ta.load_bytes(got["schedule"], elem).values())
    assert got["load_bytes"] == counted
    assert counted < got["l2_bytes"] <= counted * (1.08 if n >= 32 else 1.35)
    if n >= 32:
        assert got["config"].split_k == 1
    else:
        assert got["config"].split_k > 1  # the partials' reads are in both counts
    # L1 serving the pool's shared rows (optimistic) only removes L2 traffic.
    assert pm.kernel_v4(spec, n, hw, hw, dtype, H100, pm.OPTIMISTIC)["l2_bytes"] < got["l2_bytes"]


def test_simulation_respects_programs_and_dependencies():
    """One program runs every item back to back; a program per item is the critical path."""
    spec, hw = googlenet_spec("3a"), GOOGLENET_SPATIAL["3a"]
    cfg = default_config(spec, 1, hw, hw, H100.sms, torch.float16)
    sched = schedule_for(spec, 1, hw, hw, cfg, 8)
    costs = pm._v4_costs(sched, cfg, H100, pm.OPTIMISTIC, 2, 8)
    serial = pm._simulate(sched, costs, 1)
    assert serial == pytest.approx(sum(d + c / row[5] for row, (d, c, *_) in zip(sched.items, costs)))
    wide = pm._simulate(sched, costs, len(sched.items))
    p_max = max(d + c for row, (d, c, *_) in zip(sched.items, costs) if row[0] == 0)
    c_max = max(d + c for row, (d, c, *_) in zip(sched.items, costs) if row[0] >= 2)
    assert p_max < wide <= p_max + c_max + 1e-12  # a C item starts after its P items, not before


def test_v3_counts_match_notes():
    """The historical v3 decomposition issues the MACs NOTES.md counted inside the interpreter
    (work_count.py): batch 1 with the GPU's small-batch tile, batch 256 with the default tile."""
    notes = {1: [3.14, 2.85, 4.61, 4.23, 4.11, 5.59, 4.93, 5.77, 5.27],
             256: [1.99, 1.50, 2.03, 1.87, 1.55, 2.05, 1.70, 1.71, 1.54]}
    for n, expected in notes.items():
        for name, want in zip(GOOGLENET_BLOCKS, expected):
            spec, hw = googlenet_spec(name), GOOGLENET_SPATIAL[name]
            got = pm.kernel_v3(spec, n, hw, hw, torch.float16, H100, pm.OPTIMISTIC)["issued_flops"]
            assert got / pm.block_flops(spec, n, hw, hw) == pytest.approx(want, abs=0.005), (name, n)


def test_h200_only_changes_memory():
    h200 = pm.GPUS["h200"]
    assert (h200.sms, h200.mma_tflops) == (H100.sms, H100.mma_tflops)
    assert h200.dram_tbs == pytest.approx(3.0 * 4.8 / 3.35)
    spec, hw = googlenet_spec("3a"), GOOGLENET_SPATIAL["3a"]
    slow, fast = (pm.peers(spec, 256, hw, hw, torch.float16, g, pm.OPTIMISTIC)["eager"] for g in (H100, h200))
    assert fast < slow


def test_cli_and_params_file(tmp_path, capsys):
    path = tmp_path / "calibration-h100.json"
    path.write_text(json.dumps({"device": "x", "params": {"name": "fitted", "mma_eff": 0.6, "item_us": 2.0}}))
    prm = pm.load_params(path)
    assert (prm.name, prm.mma_eff, prm.item_us, prm.l2_tbs) == ("fitted", 0.6, 2.0, pm.OPTIMISTIC.l2_tbs)
    assert pm.main(["--gpu", "h200", "--params", str(path), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "PREDICTIONS" in out and "H200, fitted parameters" in out and "| block |" in out
    assert out.count("KernelBench") >= 2 and "what-ifs" in out


def _run(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / "calibrate.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env=env)


def test_calibrate_help():
    r = _run("--help")
    assert r.returncode == 0, r.stderr
    assert "usage" in r.stdout and "--budget" in r.stdout


@pytest.mark.skipif(CUDA, reason="checks the message of a machine without CUDA")
def test_calibrate_without_cuda_says_so():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = _run(env=env)
    assert r.returncode == 2 and "needs a CUDA GPU" in r.stderr


def test_calibrate_microkernel_computes_its_items():
    """The microkernel's ticket loop does every item once and leaves its state zero (in Triton's
    interpreter here; on a GPU, for real)."""
    cal = bench_module("calibrate")
    dev = "cuda" if CUDA else "cpu"
    bm, bn, bk, items, chunks = 16, 16, 16, 5, 3
    a = torch.randn(8 * bm * bk, device=dev).half()
    b = torch.randn(8 * bk * bn, device=dev).half()
    c = torch.zeros(1024 * bm * bn, device=dev).half()
    state = torch.zeros(2, device=dev, dtype=torch.int32)
    cal._item_loop[(2,)](a, b, c, state, items, 2, chunks, LOAD=True, BM=bm, BN=bn, BK=bk)
    at, bt = a.float().view(8, bm, bk), b.float().view(8, bk, bn)
    for t in range(items):
        want = sum(at[(t + i) % 8] @ bt[(t + i) % 8] for i in range(chunks))
        torch.testing.assert_close(c.float().view(1024, bm, bn)[t], want, atol=0.05, rtol=0.02)
    assert c.view(1024, -1)[items:].abs().sum() == 0
    assert state.tolist() == [0, 0]
