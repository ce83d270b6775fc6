"""The benchmark scripts' GPU code path, run on CPU with stubbed timers and a fake GPU: the cases,
providers, checks and reports a GPU session would produce, without a GPU."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from fused_inception import googlenet_spec
from fused_inception.kernels.triton_inception import interpreting

from .helpers import bench_module

D, E, K, P, R, T = (bench_module(m) for m in ("runner", "environment", "counting", "providers", "report", "timing"))
NOT_GRAPH = "the CUDA extension computes GoogLeNet blocks only, not "

# -- the GPU code path, on CPU with stubbed timers ---------------------------------------------------
class FakeTimer:
    """Stands in for the CUDA timers: runs the benchmarked call once (rotation and all), then
    returns the next preset (median, p20, p80)."""

    def __init__(self, medians):
        self.medians, self.calls = list(medians), 0

    def __call__(self, fn, warmup, rep):
        fn()
        t = self.medians[self.calls]
        self.calls += 1
        return t, 0.9 * t, 1.2 * t


@pytest.fixture
def fake_gpu(monkeypatch):
    monkeypatch.setattr(E, "l2_bytes", lambda: 50 << 20)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda *a, **k: None)
    env = {"gpu": {"name": "Fake GPU"}, "torch": torch.__version__, "triton": "x", "torch_cuda": "13.0"}
    ceilings = {"copy_gbps": 4000.0, "matmul_tflops": {"fp16": 800.0, "fp32": 60.0}}
    return env, ceilings


@pytest.mark.skipif(not interpreting(), reason="runs the fused provider on Triton's interpreter")
def test_bench_block_gpu_path_with_stub_timers(fake_gpu, monkeypatch, tmp_path):
    env, ceilings = fake_gpu
    bb = bench_module("bench_block")
    import fused_inception as fi

    timer = FakeTimer([4.0, 1.0, 2.0])  # eager, fused-triton at N=2, then eager at N=1
    monkeypatch.setattr(T, "time_loop", timer)
    monkeypatch.setattr(T, "time_events", timer)
    args = bb.resolve(bb.parse_args(["--blocks", "3a", "--batches", "2", "--spatial", "3", "--dtype", "fp16",
                                     "--providers", "eager,fused-triton", "--out", str(tmp_path)]), cuda=True)
    runner = bb.Runner(fi, args, cuda=True, device=torch.device("cpu"))
    runner.ceilings = ceilings
    progress = D.Progress(3, enabled=False)
    cases = [runner.run_case("3a", 2, "fp16", "channels_last", progress)]
    args.providers = ["eager"]  # a second case, cheaper without the interpreter
    cases.append(runner.run_case("3a", 1, "fp16", "channels_last", progress))
    assert timer.calls == 3
    data = {"benchmark": "bench_block", "env": env, "ceilings": ceilings, "cases": cases, "complete": True}
    assert cases[1]["providers"]["eager"]["speedup_vs_eager"] == 1.0 and cases[1]["best_peer"] == "eager"
    for case, (t_eager, t_fused) in zip(cases[:1], [(4.0, 1.0)]):
        flops = K.block_flops(googlenet_spec("3a"), case["batch"], 3, 3)
        assert case["flops"] == flops and case["method"] == "loop"  # tiny: launch-bound
        assert case["buffers"] >= 2 and case["best_peer"] == "eager"
        eager, fused = case["providers"]["eager"], case["providers"]["fused-triton"]
        assert eager["status"] == fused["status"] == "ok"
        assert fused["median_ms"] == t_fused and fused["p20_ms"] == 0.9 * t_fused
        assert fused["speedup_vs_eager"] == fused["speedup_vs_best_peer"] == t_eager / t_fused
        assert math.isclose(fused["tflops"], flops / (t_fused * 1e-3) / 1e12)
        assert math.isclose(fused["pct_floor"], 100 * case["floor_ms"] / t_fused)
        floor_s, _ = K.roofline_floor_s(flops, case["min_bytes"]["total"], 800e12, 4000e9)
        assert math.isclose(case["floor_ms"], floor_s * 1e3)
    table = bb.gpu_table(data)
    assert "fused-triton" in table and "4.00" in table and "Fake GPU" in table
    assert "3a" in R.summarize_block(data)
    R.write_json(tmp_path / "b.json", data)
    assert json.loads((tmp_path / "b.json").read_text())["cases"][1]["batch"] == 1
    if R.try_import_pyplot() is not None:
        assert bb.plot(data, tmp_path / "b.png") and (tmp_path / "b.png").stat().st_size > 1000


def test_bench_googlenet_gpu_path_with_stub_timers(fake_gpu, monkeypatch, tmp_path):
    env, ceilings = fake_gpu
    bg = bench_module("bench_googlenet")
    import fused_inception as fi

    timer = FakeTimer([8.0])
    monkeypatch.setattr(T, "time_loop", timer)
    args = bg.resolve(bg.parse_args(["--dtype", "fp32", "--batches", "2", "--extra", "none", "--image-size", "32",
                                     "--providers", "eager", "--out", str(tmp_path)]), cuda=True)
    runner = bg.Runner(fi, args, cuda=True, device=torch.device("cpu"))
    runner.ceilings = ceilings
    (case,) = [runner.run_case("fp32", 2, D.Progress(1, enabled=False))]
    r = case["providers"]["eager"]
    assert r["status"] == "ok" and r["rel_err"] < 1e-4
    assert r["images_per_s"] == 2 / 8e-3 and r["speedup_vs_eager"] == 1.0
    assert case["flops"] == 2 * runner.flops_per_image > 0
    b = case["min_bytes"]  # input, logits, and the weights of every layer that runs (not the aux heads)
    assert b["input"] == 2 * 3 * 32 * 32 * 4 and b["output"] == 2 * 1000 * 4
    weights = sum(p.numel() for n, p in P.fold_batch_norms(copy.deepcopy(runner.base)).named_parameters()
                  if not n.startswith("aux"))
    assert b["weights"] == weights * 4 and b["total"] == b["input"] + b["output"] + b["weights"]
    floor_s, _ = K.roofline_floor_s(case["flops"], b["total"], 60e12, 4000e9)
    assert math.isclose(r["pct_floor"], 100 * floor_s * 1e3 / 8.0)
    data = {"benchmark": "bench_googlenet", "env": env, "ceilings": ceilings, "cases": [case],
            "flops_per_image": runner.flops_per_image, "args": {"image_size": 32, "layout": "channels_last"},
            "complete": True}
    assert "250" in bg.gpu_table(data) and "250" in R.summarize_googlenet(data)
    if R.try_import_pyplot() is not None:
        assert bg.plot(data, tmp_path / "g.png")


def test_bench_block_inception_v3_gpu_path_with_stub_timers(fake_gpu, monkeypatch, tmp_path):
    """A stride-2 graph block on the GPU code path: its FLOPs are 2 x graph.macs, its bytes and
    roofline count the smaller output map, fused-cuda says why it does not apply. (The fused
    provider's GPU path is the one test_bench_block_gpu_path_with_stub_timers runs; the CPU pass
    runs this block's FusedBlock in the interpreter.)"""
    env, ceilings = fake_gpu
    bb = bench_module("bench_block")
    import fused_inception as fi
    from fused_inception.graph import INCEPTION_V3_BLOCKS

    monkeypatch.setattr(T, "time_loop", FakeTimer([4.0]))
    args = bb.resolve(bb.parse_args(["--family", "inception_v3", "--blocks", "Mixed_6a", "--batches", "1",
                                     "--spatial", "3", "--dtype", "fp16", "--out", str(tmp_path),
                                     "--providers", "eager,fused-cuda"]), cuda=True)
    runner = bb.Runner(fi, args, cuda=True, device=torch.device("cpu"))
    runner.ceilings = ceilings
    case = runner.run_case("Mixed_6a", 1, "fp16", "channels_last", D.Progress(3, enabled=False))
    graph = INCEPTION_V3_BLOCKS["Mixed_6a"][0]
    assert case["flops"] == 2 * graph.macs(1, 3, 3) and (case["out_height"], case["out_width"]) == (1, 1)
    assert case["min_bytes"]["output"] == 768 * 1 * 1 * 2 and case["min_bytes"]["input"] == 288 * 9 * 2
    eager = case["providers"]["eager"]
    assert eager["status"] == "ok" and eager["speedup_vs_best_peer"] == 1.0
    floor_s, _ = K.roofline_floor_s(case["flops"], case["min_bytes"]["total"], 800e12, 4000e9)
    assert math.isclose(eager["pct_floor"], 100 * floor_s * 1e3 / 4.0)
    assert case["providers"]["fused-cuda"]["message"] == NOT_GRAPH + "B"
    data = {"benchmark": "bench_block_inception_v3", "env": env, "ceilings": ceilings, "cases": [case],
            "complete": True}
    assert "Mixed_6a N=1 3x3->1x1" in bb.gpu_table(data) and R.summarize_block(data).startswith("bench_block_incep")


def test_bench_inception_v3_gpu_path_with_stub_timers(fake_gpu, monkeypatch, tmp_path):
    env, ceilings = fake_gpu
    bv = bench_module("bench_inception_v3")
    import fused_inception as fi

    monkeypatch.setattr(T, "time_loop", FakeTimer([20.0]))
    args = bv.resolve(bv.parse_args(["--dtype", "fp32", "--batches", "2", "--image-size", "75", "--providers", "eager",
                                     "--out", str(tmp_path)]), cuda=True)
    runner = bv.Runner(fi, args, cuda=True, device=torch.device("cpu"))
    runner.ceilings = ceilings
    case = runner.run_case("fp32", 2, D.Progress(1, enabled=False))
    r = case["providers"]["eager"]
    assert r["status"] == "ok" and r["images_per_s"] == 2 / 20e-3 and r["pct_floor"] > 0
    assert case["flops"] == 2 * K.model_flops(P.fold_batch_norms(copy.deepcopy(runner.base)), torch.randn(1, 3, 75, 75))
    assert case["min_bytes"]["output"] == 2 * 1000 * 4
    data = {"benchmark": "bench_inception_v3", "env": env, "ceilings": ceilings, "cases": [case],
            "flops_per_image": runner.flops_per_image, "network": runner.net.name,
            "args": {"image_size": 75, "layout": "channels_last"}, "complete": True}
    assert "Inception-v3" in bv.networks.gpu_table(data) and "100" in R.summarize_googlenet(data)


def test_a_wrong_provider_is_reported_as_mismatch(fake_gpu, monkeypatch):
    """The check is not decorative: a provider computing something else is flagged, not timed."""
    _, ceilings = fake_gpu
    bb = bench_module("bench_block")
    import fused_inception as fi

    monkeypatch.setattr(T, "time_loop", FakeTimer([1.0]))
    args = bb.resolve(bb.parse_args(["--blocks", "3a", "--batches", "1", "--spatial", "3", "--dtype", "fp32",
                                     "--providers", "eager"]), cuda=True)
    runner = bb.Runner(fi, args, cuda=True, device=torch.device("cpu"))
    runner.ceilings = ceilings
    real = P.build_provider

    def wrong(*a, **k):  # the eager block with one conv's bias shifted: a different function
        prov = real(*a, **k)
        with torch.no_grad():
            prov.module.branch1.conv.bias.add_(0.5)
        return prov

    monkeypatch.setattr(P, "build_provider", wrong)
    case = runner.run_case("3a", 1, "fp32", "channels_last", D.Progress(1, enabled=False))
    r = case["providers"]["eager"]
    assert r["status"] == "mismatch" and "relative error" in r["message"] and "median_ms" not in r
    assert case["best_peer"] is None


@pytest.mark.skipif(not interpreting(), reason="fused-triton is a CPU provider only on the interpreter")
def test_a_silent_backend_fallback_is_an_error(monkeypatch):
    bb = bench_module("bench_block")
    import fused_inception as fi

    args = bb.resolve(bb.parse_args(["--blocks", "3a", "--batches", "1", "--spatial", "2",
                                     "--providers", "fused-triton"]), cuda=False)
    real = P.build_provider

    def falls_back(*a, **k):  # right numbers, wrong backend: must not pass as "fused-triton"
        prov = real(*a, **k)
        prov.fused_module.backend = "reference"
        return prov

    monkeypatch.setattr(P, "build_provider", falls_back)
    case = bb.Runner(fi, args, cuda=False).run_case("3a", 1, "fp32", "nchw", D.Progress(1, enabled=False))
    r = case["providers"]["fused-triton"]
    assert r["rel_err"] < 1e-5 and r["status"] == "error" and "unexpected backend" in r["message"]
