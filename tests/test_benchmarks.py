"""The benchmark scripts: --help, the CPU correctness pass that CI runs, and the FLOP / byte
counting against hand computations (their GPU code path: ``test_benchmarks_gpu_path.py``)."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fused_inception import InceptionSpec, googlenet_spec
from fused_inception.kernels.triton_inception import interpreting

from .helpers import BENCH, CUDA, bench_module, rel_err, tolerance

D, E, K, P, R, T = (bench_module(m) for m in ("runner", "environment", "counting", "providers", "report", "timing"))

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    # The scripts must switch the interpreter on themselves: drop the variable conftest set.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cpu = ["--cpu"] if CUDA and script != "sanitize_cases.py" else []  # the CPU pass on a GPU machine too
    return subprocess.run([sys.executable, str(BENCH / script), *cpu, *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=timeout)


# -- the scripts as CI runs them -------------------------------------------------------------------
@pytest.mark.parametrize("script,option", [("bench_block.py", "--family"), ("bench_googlenet.py", "--providers"),
                                           ("bench_inception_v3.py", "--fid"), ("sanitize_cases.py", "--quick")],
                         ids=["bench_block", "bench_googlenet", "bench_inception_v3", "sanitize_cases"])
def test_help(script, option):
    r = run_script(script, "--help", timeout=60)
    assert r.returncode == 0, r.stderr
    assert option in r.stdout and "usage" in r.stdout


# Why the CUDA-only providers are unavailable in the CPU pass; the fused-cuda ones on graph blocks
# (Inception-v3's) say that the extension computes GoogLeNet's block only, whatever the device.
NEEDS_CUDA = {"eager-graph": "needs CUDA", "fused-triton-graph": "needs CUDA", "fused-cuda": "needs CUDA"}
NOT_GRAPH = "the CUDA extension computes GoogLeNet blocks only, not "


def _check_cpu_run(r: subprocess.CompletedProcess, json_path: Path, cpu_providers: tuple[str, ...],
                   unavailable: dict[str, str] = NEEDS_CUDA) -> dict:
    assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr[-3000:]}"
    if not CUDA:  # says why there is no timing, and what a GPU run would have printed
        assert "timings need a CUDA GPU" in r.stdout and "On a GPU this prints " in r.stdout
    assert "all providers that ran passed their check" in r.stdout
    data = json.loads(json_path.read_text())
    assert data["mode"] == "cpu-correctness" and data["complete"] and not data["failures"]
    assert data["env"]["triton_interpret"] == "1"
    for case in data["cases"]:
        prov = case["providers"]
        for name in cpu_providers:
            assert prov[name]["status"] == "ok", prov[name]
            assert 0 < prov[name]["rel_err"] <= data["tolerance"][case["dtype"]]
            assert "median_ms" not in prov[name]  # no timing without CUDA
        for name, why in unavailable.items():
            assert prov[name]["status"] == "unavailable" and prov[name]["message"].startswith(why), prov[name]
            assert set(prov[name]) == {"group", "status", "message"}
    return data


def test_bench_block_cpu_pass(tmp_path):
    """The README's main job on a machine without CUDA: every provider that runs on CPU is checked,
    torch.compile (Inductor's C++ backend, default mode) included."""
    r = run_script("bench_block.py", "--out", str(tmp_path), "--no-progress")
    data = _check_cpu_run(r, tmp_path / "bench_block.json", ("eager", "compile", "fused-triton"))
    assert [(c["block"], c["batch"], c["height"], c["dtype"]) for c in data["cases"]] == [("3a", 2, 5, "fp32")]
    assert data["args"]["compile_mode"] == "default"
    assert "fused-triton" in (tmp_path / "bench_block.txt").read_text()


def test_bench_googlenet_cpu_pass(tmp_path):
    r = run_script("bench_googlenet.py", "--out", str(tmp_path), "--no-progress")
    data = _check_cpu_run(r, tmp_path / "bench_googlenet.json", ("eager", "fused-triton"))
    (case,) = data["cases"]
    assert (case["dtype"], case["batch"], case["image_size"]) == ("fp32", 1, 32)
    assert "compile" not in case["providers"] and "'compile' is left out" in r.stdout  # minutes of Inductor
    backends = case["providers"]["fused-triton"]["block_backends"]
    assert len(backends) == 9  # every block converted
    assert backends.pop("inception3a") == "triton" and set(backends.values()) == {"reference"}


def test_bench_block_inception_v3_cpu_pass(tmp_path):
    """--family inception_v3: an A block and the stride-2 B block (its output map 2x2) against the
    fp64 reference, the fused one in the interpreter; compile is left to the slow tier (its
    Inductor build takes ~20 s here)."""
    r = run_script("bench_block.py", "--family", "inception_v3", "--out", str(tmp_path), "--no-progress",
                   "--providers", "eager,eager-graph,fused-triton,fused-triton-graph,fused-cuda")
    data = _check_cpu_run(r, tmp_path / "bench_block_inception_v3.json", ("eager", "fused-triton"),
                          {**NEEDS_CUDA, "fused-cuda": NOT_GRAPH})
    assert [(c["block"], c["kind"], c["batch"], c["height"], c["out_height"], c["dtype"]) for c in data["cases"]] == [
        ("Mixed_5b", "A", 1, 5, 5, "fp32"), ("Mixed_6a", "B", 1, 5, 2, "fp32")]
    assert data["family"] == "inception_v3" and "5x5->2x2" in r.stdout


@pytest.mark.slow  # the default pass with compile (Inductor's C++ build of two blocks) and the FID blocks
@pytest.mark.parametrize("family", ["inception_v3", "fid"])
def test_bench_block_inception_v3_cpu_pass_with_compile(tmp_path, family):
    r = run_script("bench_block.py", "--family", family, "--out", str(tmp_path), "--no-progress", timeout=300)
    data = _check_cpu_run(r, tmp_path / f"bench_block_{family}.json", ("eager", "compile", "fused-triton"),
                          {**NEEDS_CUDA, "fused-cuda": NOT_GRAPH})
    assert [c["kind"] for c in data["cases"]] == (["A", "B"] if family == "inception_v3" else ["fid-A", "B"])


def test_bench_inception_v3_cpu_pass(tmp_path):
    """The converted Inception-v3 at 75x75 (the smallest input it takes): Mixed_5b in the
    interpreter, the other ten blocks converted too, on their reference path."""
    r = run_script("bench_inception_v3.py", "--out", str(tmp_path), "--no-progress", "--no-table-file")
    data = _check_cpu_run(r, tmp_path / "bench_inception_v3.json", ("eager", "fused-triton"),
                          {**NEEDS_CUDA, "fused-cuda": NOT_GRAPH + "A/B/C/D/E"})
    assert [f.name for f in tmp_path.iterdir()] == ["bench_inception_v3.json"]  # the table only on stdout
    (case,) = data["cases"]
    assert (case["dtype"], case["batch"], case["image_size"]) == ("fp32", 1, 75)
    assert data["network"].startswith("Inception-v3") and "compile" not in case["providers"]
    backends = case["providers"]["fused-triton"]["block_backends"]
    assert len(backends) == 11  # every Mixed block converted
    assert backends.pop("Mixed_5b") == "triton" and set(backends.values()) == {"reference"}


@pytest.mark.slow  # the FID network resizes to 299x299: ~80 s here
def test_bench_inception_v3_fid_cpu_pass(tmp_path):
    r = run_script("bench_inception_v3.py", "--fid", "--out", str(tmp_path), "--no-progress", timeout=300)
    data = _check_cpu_run(r, tmp_path / "bench_inception_v3.json", ("eager", "fused-triton"),
                          {**NEEDS_CUDA, "fused-cuda": NOT_GRAPH})
    backends = data["cases"][0]["providers"]["fused-triton"]["block_backends"]
    assert backends.pop("inception.Mixed_7c") == "triton" and set(backends.values()) == {"reference"}
    assert len(backends) == 10 and data["network"].startswith("FID")


@pytest.mark.slow  # a GPU session's script; its dry run costs the default tier ~10 s of interpreter
def test_sanitize_cases_dry_run_on_cpu():  # the script switches the interpreter on itself
    r = run_script("sanitize_cases.py", "--device", "cpu", "--quick", "--impls", "triton")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count(" ok rel err") == 5 and "0 failure(s)" in r.stdout  # 3 GoogLeNet, 2 graph cases


def test_bad_arguments_are_clear_errors():
    r = run_script("bench_block.py", "--blocks", "3z", timeout=60)
    assert r.returncode == 2 and "unknown block ['3z']" in r.stderr
    r = run_script("bench_block.py", "--family", "fid", "--blocks", "3a", timeout=60)
    assert r.returncode == 2 and "unknown block ['3a']" in r.stderr and "Mixed_5b" in r.stderr
    r = run_script("bench_block.py", "--family", "inception_v3", "--blocks", "Mixed_6a", "--spatial", "2", timeout=60)
    assert r.returncode == 2 and "too small" in r.stderr
    r = run_script("bench_inception_v3.py", "--image-size", "64", timeout=60)
    assert r.returncode == 2 and "--image-size must be >= 75" in r.stderr


# -- counting --------------------------------------------------------------------------------------
def test_flops_and_bytes_of_3a_by_hand():
    spec = googlenet_spec("3a")  # 192 -> 64 | 96->128 | 16->32 (3x3) | pool->32
    # MACs per pixel: 192*(64+96+16+32) + 9*96*128 + 9*16*32 = 39936 + 110592 + 4608
    assert spec.macs_per_pixel == 155136
    assert K.block_flops(spec, 2, 28, 28) == 2 * 2 * 28 * 28 * 155136 == 486_506_496
    b = K.block_min_bytes(spec, 2, 28, 28, elem=2)
    assert b["input"] == 2 * 192 * 784 * 2 == 602_112
    assert b["output"] == 2 * 256 * 784 * 2 == 802_816
    assert b["weights"] == 155136 * 2
    assert b["biases"] == (64 + 96 + 16 + 128 + 32 + 32) * 4 == 1472
    assert b["total"] == 602_112 + 802_816 + 310_272 + 1472


def test_flops_of_a_true_5x5_and_paper_block():
    spec = InceptionSpec.paper(192, 64, 96, 128, 16, 32, 32)
    assert spec.macs_per_pixel == 39936 + 110592 + 25 * 16 * 32
    odd = InceptionSpec(3, 1, 2, 4, 5, 6, 7, k3=1, k5=7)
    assert K.block_flops(odd, 1, 1, 1) == 2 * (3 * (1 + 2 + 5 + 7) + 1 * 2 * 4 + 49 * 5 * 6)


def test_model_flops_counts_fused_blocks_like_the_formula():
    import fused_inception as fi

    spec = googlenet_spec("4e")
    block = fi.ReferenceInception(spec).eval()
    x = torch.randn(1, spec.in_channels, 3, 3)
    assert K.model_flops(block, x) == K.block_flops(spec, 1, 3, 3)  # six convs counted by hooks
    fused = fi.FusedInception.from_module(copy.deepcopy(block), backend="reference")
    assert K.model_flops(fused, x) == K.block_flops(spec, 1, 3, 3)  # the block counted as one


def test_flops_and_bytes_of_graph_blocks_share_the_googlenet_path():
    """One code path: GoogLeNet's spec and its BlockGraph count the same; an Inception-v3 block
    counts 2 x graph.macs, and a stride-2 block's output bytes are those of its smaller map."""
    from fused_inception.graph import FID_BLOCKS, INCEPTION_V3_BLOCKS

    spec = googlenet_spec("4e")
    assert K.block_flops(spec.graph, 2, 14, 14) == K.block_flops(spec, 2, 14, 14) == 4 * 14 * 14 * spec.macs_per_pixel
    assert K.block_min_bytes(spec.graph, 2, 14, 14, 2) == K.block_min_bytes(spec, 2, 14, 14, 2)
    for name, (graph, hw) in {**INCEPTION_V3_BLOCKS, **{f"fid {k}": v for k, v in FID_BLOCKS.items()}}.items():
        assert K.block_flops(graph, 3, hw, hw) == 2 * graph.macs(3, hw, hw), name
    b6a = K.block_min_bytes(INCEPTION_V3_BLOCKS["Mixed_6a"][0], 2, 35, 35, elem=2)  # 288 -> 384 | 96 | pool 288
    assert b6a["input"] == 2 * 288 * 35 * 35 * 2 and b6a["output"] == 2 * 768 * 17 * 17 * 2
    assert b6a["weights"] == (9 * 288 * 384 + 288 * 64 + 9 * 64 * 96 + 9 * 96 * 96) * 2
    assert b6a["biases"] == (384 + 64 + 96 + 96) * 4


def test_model_counts_of_graph_blocks_and_networks():
    import fused_inception as fi
    from fused_inception.graph import INCEPTION_V3_BLOCKS

    graph = INCEPTION_V3_BLOCKS["Mixed_7a"][0]
    block = fi.ReferenceBlock(graph).eval()
    x = torch.randn(1, graph.in_channels, 5, 5)
    fused = fi.FusedBlock.from_module(copy.deepcopy(block), backend="reference")
    assert K.model_flops(block, x) == K.model_flops(fused, x) == K.block_flops(graph, 1, 5, 5)
    # FID Inception's 1008-class fc never runs: its weights are not part of the minimum traffic
    # (nor are BatchNorm's, which the benchmarks fold into the convs before counting).
    fid = fi.models.fid_inception_v3().eval()
    counts = K.model_counts(fid, torch.rand(1, 3, 8, 8))
    assert counts["output"] == 2048
    assert counts["weights"] == sum(p.numel() for n, p in fid.named_parameters()
                                    if not n.startswith("inception.fc") and ".bn." not in n)


def test_roofline_floor():
    assert K.roofline_floor_s(1e12, 1e9, 1e15, 1e12) == (1e-3, "compute")
    assert K.roofline_floor_s(1e9, 4e9, 1e15, 2e12) == (2e-3, "memory")


def test_rotation_buffers_exceed_twice_l2_within_caps():
    l2 = 50 << 20
    n = T.rotation_buffers(10 << 20, l2)
    assert n * (10 << 20) > 2 * l2 and n == 11
    assert T.rotation_buffers(200 << 20, l2) == 2  # big inputs: two buffers
    assert T.rotation_buffers(1000, l2, max_buffers=64) == 64
    assert T.rotation_buffers(3 << 30, l2, max_total_bytes=4 << 30) == 2


def test_check_indices_quantiles_and_formatting():
    assert P.check_indices(3) == [0, 1, 2]
    idx = P.check_indices(256)
    assert idx[0] == 0 and idx[-1] == 255 and len(idx) == 8
    assert T.quantiles([5, 1, 4, 2, 3]) == (3, 1.8, 4.2)
    assert R.fmt(None) == "-" and R.fmt(float("nan")) == "-" and R.fmt(1234.5) == "1234"
    assert R.fmt(0.01234) == "0.0123" and R.fmt(3.2e-5, 2) == "3.2e-05"
    table = R.format_table(["a", "bb"], [["x", 1], None, ["yyy", 22]], right=[1])
    assert table.splitlines() == ["a    bb", "---  --", "x     1", "---  --", "yyy  22"]


def test_check_against_flags_nan_and_error():
    ref = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    ok, err, _ = P.check_against(ref.float(), ref, [0, 1, 2, 3], 1e-6)
    assert ok and err < 1e-7
    bad = ref.float().clone()
    bad[3, 0, 0, 0] = float("nan")  # an element outside the checked images still counts
    ok, err, msg = P.check_against(bad, ref[:2], [0, 1], 1e-6)
    assert not ok and "non-finite" in msg
    ok, err, msg = P.check_against((ref * 1.01).float(), ref, [0, 1, 2, 3], 1e-3)
    assert not ok and math.isclose(err, 0.01, rel_tol=1e-3) and "relative error" in msg


def test_fold_batch_norms_keeps_inception_v3s_function():
    """Inception-v3's BasicConv2d calls its bn unconditionally: folding leaves an Identity there."""
    import fused_inception as fi

    m = P.randomize_batch_norms(fi.models.inception_v3(aux_logits=False).eval(), seed=2)
    x = torch.randn(1, 3, 75, 75)
    with torch.no_grad():
        want = m(x)
        got = P.fold_batch_norms(copy.deepcopy(m))(x)
    assert rel_err(got, want) < tolerance(torch.float32)
    assert P.graph_block_kinds(m) == ["A", "B", "C", "D", "E"] and P.graph_block_kinds(fi.ReferenceInception(
        googlenet_spec("3a"))) == []


def test_fold_batch_norms_keeps_the_function():
    import fused_inception as fi

    m = P.randomize_batch_norms(fi.models.googlenet("torchvision", init_weights=False).eval(), seed=1)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        want = m(x)
        folded = P.fold_batch_norms(copy.deepcopy(m))
        got = folded(x)
    assert not any(isinstance(t, torch.nn.BatchNorm2d) for t in folded.modules())
    assert rel_err(got, want) < tolerance(torch.float32)


def test_nvidia_smi_query_falls_back_to_one_field_at_a_time(monkeypatch, tmp_path):
    """A driver that rejects one field must not lose the others (the query is read-only)."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text('#!/bin/sh\ncase "$1" in *clocks.max.mem*,*|*,*clocks.max.mem*) echo "bad field" >&2; exit 2;;\n'
                    '  *clocks.max.mem*) exit 2;;\n  *name*) echo "Fake GPU";;\n  *) echo "42";;\nesac\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    (gpu,) = E.nvidia_smi_query()["gpus"]
    assert gpu["name"] == "Fake GPU" and gpu["clocks.sm"] == "42" and "clocks.max.mem" not in gpu


@pytest.mark.skipif(not interpreting(), reason="counts the kernel's work inside Triton's interpreter")
@pytest.mark.parametrize("split_k", [1, 3], ids=["unsplit", "split3"])
def test_work_counted_in_the_interpreter_matches_the_tiling_analysis(split_k):
    """The MACs the kernel's tl.dot calls issue, counted while it runs, equal the analytic count of
    benchmarks/tiling_analysis.py from the work table (input channels 40: not a whole number of
    32-channel chunks; a 9x9 map: a partial tile that crosses images), and the loads read at least
    x and the packed weights once."""
    wc, ta = bench_module("work_count"), bench_module("tiling_analysis")
    from fused_inception.kernels.tuning import TileConfig, schedule_for

    spec, n, hw = InceptionSpec(40, 16, 24, 32, 8, 16, 16, k3=3, k5=5), 2, 9
    cfg = TileConfig(block_m=64, block_n=32, block_k=32, block_kr=16, split_k=split_k)
    got = wc.count_block(spec, n, hw, hw, torch.float16, "channels_last", config=cfg)
    want = ta.analyse_spec(spec, hw, n, sms=132, cfg=cfg)
    assert got["macs"] == want["macs"]
    assert got["mac_ratio"] == pytest.approx(want["overhead"]) and got["mac_ratio"] > 1
    sched = schedule_for(spec, n, hw, hw, cfg, programs=4)  # the interpreter's grid
    assert got["load_bytes"] == sum(ta.load_bytes(sched, 2).values())
    once = 2 * (n * spec.in_channels * hw * hw + K.block_weight_elements(spec))
    assert got["load_bytes"] >= once


# v3's bytes over the minimum at batch 1 with the tile v3 ran on a GPU at batch 1 (its heuristic for
# 132 SMs), counted by work_count.py in the interpreter (benchmarks/NOTES.md, "v3's work").
V3_BYTES_BATCH1 = {"3a": 31.0, "3b": 39.4, "4a": 23.4, "4b": 23.8, "4c": 25.6, "4d": 30.0, "4e": 29.3,
                   "5a": 10.2, "5b": 10.0}


@pytest.mark.parametrize("name", list(V3_BYTES_BATCH1))
def test_kernel_v4_work_targets(name):
    """Issue 11's count targets, from the work table the launcher runs (the two tests above show the
    interpreter counts the same MACs and bytes): issued MACs at most 1.40x the block's minimum at
    batch 1 and 1.20x from batch 8; bytes requested at batch 1 at most the larger of v3's / 3 and
    1.6x the minimum (x, weights and output once); at least 100 work items at batch 1."""
    ta = bench_module("tiling_analysis")
    from fused_inception import GOOGLENET_SPATIAL, googlenet_spec
    from fused_inception.kernels.tuning import default_config, schedule_for

    spec, hw = googlenet_spec(name), GOOGLENET_SPATIAL[name]
    for n in (1, 8, 32, 256):
        r = ta.analyse_spec(spec, hw, n, sms=132, cfg=default_config(spec, n, hw, hw, 132, torch.float16))
        assert r["overhead"] <= (1.40 if n == 1 else 1.20), (n, r)
    cfg = default_config(spec, 1, hw, hw, 132, torch.float16)
    sched = schedule_for(spec, 1, hw, hw, cfg)
    assert len(sched.items) >= 100
    ratio = sum(ta.load_bytes(sched, 2).values()) / K.block_min_bytes(spec, 1, hw, hw, 2)["total"]
    assert ratio <= max(V3_BYTES_BATCH1[name] / 3, 1.6), ratio
