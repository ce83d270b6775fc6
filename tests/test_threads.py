"""Concurrency: threads sharing a block (the packed-weight cache, forwards) on CPU; on a GPU, the
launch on the caller's current stream and on a non-default device.

On CPU the fused path is the Triton kernel in the interpreter; GPU tests skip without CUDA.
"""

from __future__ import annotations

import sys
import threading

import pytest
import torch

from fused_inception.packing import pack_weights

from .helpers import CUDA_SPEC, DTYPES, make_block, make_input, oracle, rel_err, requires_interpreter, tolerance
from .helpers import TINY_TV as TV

pytestmark = pytest.mark.usefixtures("default_tiles")


def test_packed_weights_cache_is_consistent_across_threads():
    """Threads asking for different dtypes thrash the cache; each must get its own dtype's weights."""
    block = make_block(TV)
    want = {dt: pack_weights(block._parts.tensors(), dt) for dt in DTYPES.values()}
    errors: list[str] = []

    def worker(dtype):
        for _ in range(200):
            got = block.packed_weights(dtype)
            if not all(torch.equal(g, w) for g, w in zip(got, want[dtype])):
                errors.append(f"wrong packed weights for {dtype}")
                return

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=worker, args=(dt,)) for dt in [*DTYPES.values()] * 2]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors[:3]


@requires_interpreter
def test_concurrent_forwards_match_serial():
    block = make_block(TV)
    xs = [make_input(1, 4, 3, 3) for _ in range(3)]
    with torch.no_grad():
        want = [block(x) for x in xs]
    got: list = [None] * len(xs)

    def worker(i):
        with torch.no_grad():
            got[i] = block(xs[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, w in zip(got, want):
        assert g is not None and torch.equal(g, w)


@pytest.mark.gpu
def test_launches_on_the_current_stream():
    """The side stream sleeps, then writes x: a kernel launched on any other stream would read
    the stale (zero) input."""
    block = make_block(CUDA_SPEC, device="cuda")
    src = make_input(2, 64, 14, 14, device="cuda")
    x = torch.zeros_like(src)
    with torch.no_grad():
        block(x)  # warm-up (compile, cache)
        torch.cuda.synchronize()
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            torch.cuda._sleep(200_000_000)
            x.copy_(src)
            out = block(x)
        side.synchronize()
    assert rel_err(out, oracle(block, src)) < tolerance(torch.float32, "cuda")


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_runs_on_a_non_default_device():
    block = make_block(CUDA_SPEC, device="cuda:1")
    x = make_input(2, 64, 14, 14, device="cuda:1")
    assert torch.cuda.current_device() == 0
    with torch.no_grad():
        out = block(x)
    assert out.device == torch.device("cuda:1") and block.last_backend == "triton"
    assert rel_err(out, oracle(block, x)) < tolerance(torch.float32, "cuda")
    xg = x.clone().requires_grad_()
    block(xg).sum().backward()
    assert xg.grad.device == x.device
