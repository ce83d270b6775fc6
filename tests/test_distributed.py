"""A converted model under DistributedDataParallel: 2 CPU processes, gloo, loopback only.

Both processes train the converted model and the unconverted one side by side from the same
initial weights on their half of the batch; DDP all-reduces the gradients. The gradients (and the
parameters after the optimizer steps) must agree, and the state_dicts saved from either kind
must load into the other.
"""

from __future__ import annotations

import copy
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import fused_inception as fi
from fused_inception import FusedInception, InceptionSpec
from fused_inception.kernels.triton_inception import interpreting
from fused_inception.reference import ConvUnit, ReferenceInception

from .helpers import randomize_, rel_err

WORLD = 2
# (variant, mode): which path the fused blocks take. torchvision/train: BatchNorm batch statistics,
# the reference path (bit-identical); torchvision/eval and paper/train: the fused op (interpreter).
CASES = [("torchvision", "train"), ("torchvision", "eval"), ("paper", "train")]
IDS = [f"{v}-{m}" for v, m in CASES]


def tiny_net(variant: str) -> nn.Module:
    spec = InceptionSpec.paper if variant == "paper" else InceptionSpec.torchvision
    a, b = spec(4, 2, 2, 3, 2, 3, 2), spec(10, 3, 2, 4, 2, 3, 2)
    stem = ConvUnit(3, 4, 3, bias=variant == "paper", batch_norm=variant != "paper", bn_eps=1e-3, relu=True)
    return nn.Sequential(stem, ReferenceInception(a), ReferenceInception(b), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(b.out_channels, 5))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str, device: str) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only
    os.environ["FUSED_INCEPTION_AUTOTUNE"] = "0"  # (GPU) no tile autotuning in this test
    backend = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        torch.cuda.set_device(rank)
        device = f"cuda:{rank}"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        results = {}
        for variant, mode in CASES:
            torch.manual_seed(0)  # the same initial weights and data on both ranks
            plain = randomize_(tiny_net(variant)).to(device)
            fused, report = fi.convert(copy.deepcopy(plain), return_report=True)
            assert report.replaced == ["1", "2"], report
            x = torch.randn(WORLD, 3, 4, 4).to(device)
            y = torch.randint(0, 5, (WORLD,)).to(device)
            shard = slice(rank, rank + 1)
            grads = {}
            for name, model in (("plain", plain), ("fused", fused)):
                model.train(mode == "train")
                ddp = DistributedDataParallel(model)
                opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
                grads[name] = []
                for _ in range(2):
                    opt.zero_grad()
                    F.cross_entropy(ddp(x[shard]), y[shard]).backward()
                    grads[name].append({n: p.grad.cpu() for n, p in model.named_parameters()})
                    opt.step()
                grads[name + "_params"] = {n: p.detach().cpu() for n, p in model.named_parameters()}
            backends = [m.last_backend for m in fused.modules() if isinstance(m, FusedInception)]
            results[(variant, mode)] = (grads, backends)
            if rank == 0:
                torch.save(plain.state_dict(), os.path.join(out_dir, f"{variant}-{mode}-plain.pt"))
                torch.save(fused.state_dict(), os.path.join(out_dir, f"{variant}-{mode}-fused.pt"))
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _spawn(tmp_path_factory, device: str):
    out = tmp_path_factory.mktemp(f"ddp-{device}")
    mp.spawn(_worker, args=(_free_port(), str(out), device), nprocs=WORLD, join=True)
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    return out, ranks


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    return _spawn(tmp_path_factory, "cpu")


def _fused_backend(variant: str, mode: str, device: str) -> str:
    if (variant, mode) == ("torchvision", "train"):
        return "reference"  # BatchNorm batch statistics
    return "triton" if device == "cuda" or interpreting() else "reference"


def _check_gradients(ranks, variant: str, mode: str, device: str, tol: float) -> None:
    want_backend = _fused_backend(variant, mode, device)
    for grads, backends in (r[(variant, mode)] for r in ranks):
        assert backends == [want_backend, want_backend]
        for step, (gp, gf) in enumerate(zip(grads["plain"], grads["fused"])):
            assert gp.keys() == gf.keys()
            for n in gp:
                if want_backend == "reference" and device == "cpu":
                    assert torch.equal(gf[n], gp[n]), (step, n)
                else:
                    assert rel_err(gf[n], gp[n]) < tol, (step, n, rel_err(gf[n], gp[n]))
        for n, p in grads["plain_params"].items():
            assert rel_err(grads["fused_params"][n], p) < tol, n
    # DDP kept the replicas in sync: both ranks hold the same (all-reduced) gradients.
    g0, g1 = (r[(variant, mode)][0]["fused"][-1] for r in ranks)
    for n in g0:
        assert torch.equal(g0[n], g1[n]), n


@pytest.mark.parametrize("variant,mode", CASES, ids=IDS)
def test_ddp_gradients_match_unconverted(ddp_results, variant, mode):
    _check_gradients(ddp_results[1], variant, mode, "cpu", 1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < WORLD, reason="needs two CUDA devices")
@pytest.mark.skipif(not dist.is_available() or not dist.is_nccl_available(), reason="needs NCCL")
def test_ddp_nccl_gradients_match_unconverted(tmp_path_factory):
    _, ranks = _spawn(tmp_path_factory, "cuda")
    for variant, mode in CASES:
        _check_gradients(ranks, variant, mode, "cuda", 5e-3)  # TF32 on both sides


@pytest.mark.parametrize("variant,mode", CASES, ids=IDS)
def test_ddp_state_dicts_load_both_ways(ddp_results, variant, mode):
    out, _ = ddp_results
    saved_plain = torch.load(out / f"{variant}-{mode}-plain.pt")
    saved_fused = torch.load(out / f"{variant}-{mode}-fused.pt")
    assert list(saved_plain) == list(saved_fused)
    into_plain = tiny_net(variant)
    into_plain.load_state_dict(saved_fused)
    into_fused = fi.convert(tiny_net(variant), backend="reference")
    into_fused.load_state_dict(saved_plain)
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(into_fused.eval()(x), into_plain.eval()(x))
