#!/usr/bin/env python
"""A few small launches of the fused kernels, for compute-sanitizer (memcheck, racecheck).

Run under the sanitizer (device_check.sh does):

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 1 \\
        python benchmarks/sanitize_cases.py
    compute-sanitizer --tool racecheck --error-exitcode 1 python benchmarks/sanitize_cases.py --quick

Each case launches the kernel once into an output pre-filled with NaN, checks every element was
written and compares with an fp64 CPU reference (so the only device work is the fused kernel and
a few copies: the sanitizer's report is about our kernels, not cuDNN's). Partial tiles, odd
channel counts, K = 1/3/5/7, ReLU off, NCHW, channels_last and strided inputs are covered.
Without PyTorch's caching allocator (PYTORCH_NO_CUDA_MEMORY_CACHING=1) an out-of-bounds access
lands outside any allocation, where memcheck sees it. Autotuning is off (one launch per case).
Exits 1 if a check fails, 0 otherwise.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

os.environ.setdefault("FUSED_INCEPTION_AUTOTUNE", "0")  # one launch per case, no tuning sweeps

import environment as E  # noqa: E402
import providers as P  # noqa: E402
import report as R  # noqa: E402
import runner  # noqa: E402
import torch  # noqa: E402

# (name, channels, k3, k5, relu, batch, H, W, dtype, layout)
CASES = [
    ("3a-partial-tiles", (192, 64, 96, 128, 16, 32, 32), 3, 3, True, 2, 9, 11, "fp16", "channels_last"),
    ("odd-channels-k5", (19, 7, 9, 17, 5, 11, 3), 3, 5, True, 1, 13, 17, "fp32", "nchw"),
    ("5b-bf16", (832, 384, 192, 384, 48, 128, 128), 3, 3, True, 1, 7, 7, "bf16", "channels_last"),
    ("k1-k7-norelu-sliced", (33, 16, 8, 24, 12, 20, 9), 1, 7, False, 3, 5, 6, "fp16", "sliced"),
    ("tf32-4e-14x14", (528, 256, 160, 320, 32, 128, 128), 3, 3, True, 1, 14, 14, "tf32", "channels_last"),
]
QUICK = ("3a-partial-tiles", "odd-channels-k5", "k1-k7-norelu-sliced")


def make_inputs(n, c, h, w, dtype, layout, gen, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random input on the CPU and on the device, in ``layout`` ("sliced": a strided
    view of a wider tensor, read in place by the kernel)."""
    full = torch.randn(n, c, h, w + (3 if layout == "sliced" else 0), generator=gen).to(dtype)
    if layout == "channels_last":
        full = full.contiguous(memory_format=torch.channels_last)
    dev = full.to(device, copy=True)  # keeps the strides
    if layout == "sliced":
        return full[..., 1:w + 1], dev[..., 1:w + 1]
    return full, dev


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)} (racecheck is slow)")
    p.add_argument("--impls", default="triton,cuda",
                   help="fused implementations to launch; 'cuda' is skipped (with a message) when the "
                        "extension is not available")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cpu: a dry run of the same checks on Triton's interpreter (for CI; no sanitizer)")
    args = p.parse_args(argv)
    if args.device == "cpu":
        E.use_interpreter_if_no_cuda(force_cpu=True)  # before fused_inception is imported
    elif not torch.cuda.is_available():
        print("sanitize_cases.py: needs a CUDA device (it exists to run under compute-sanitizer); "
              "--device cpu runs the checks on Triton's interpreter")
        return 0
    dev = torch.device(args.device)
    fi = E.import_fused_inception()
    from fused_inception.kernels.triton_inception import inception_forward_triton
    from fused_inception.kernels.tuning import pick_config
    from fused_inception.packing import pack_weights
    from fused_inception.structure import parse_inception

    impls = runner.parse_list(args.impls, ("triton", "cuda"), "impl")
    if "cuda" in impls and dev.type == "cpu":
        print("cuda: skipped (needs a CUDA device)")
        impls.remove("cuda")
    if "cuda" in impls:
        problem = P.cuda_extension_problem()
        if problem:
            print(f"cuda: skipped ({problem})")
            impls.remove("cuda")
    failures = 0
    gen = torch.Generator().manual_seed(1234)
    for name, ch, k3, k5, relu, n, h, w, dt, layout in CASES:
        if args.quick and name not in QUICK:
            continue
        E.set_precision(dt)
        spec = fi.InceptionSpec(*ch, k3=k3, k5=k5, relu=relu)
        torch.manual_seed(len(name))
        block = P.randomize_batch_norms(fi.ReferenceInception(spec).eval(), seed=len(name))
        x_cpu, x = make_inputs(n, spec.in_channels, h, w, E.torch_dtype(dt), layout, gen, dev)
        with torch.no_grad():
            ref = copy.deepcopy(block).double()(x_cpu.double())
        parts = parse_inception(block)
        packed = pack_weights(tuple(u.tensors() for u in parts.units), E.torch_dtype(dt))
        packed = type(packed)(*(t.to(dev) for t in packed))
        for impl in impls:
            out = torch.full((n, spec.out_channels, h, w), float("nan"), dtype=x.dtype, device=dev)
            if layout == "channels_last":
                out = out.contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                if impl == "triton":
                    inception_forward_triton(x, packed, spec, pick_config(x, packed, spec), out=out)
                else:
                    from fused_inception.cuda_ext import inception_forward_cuda
                    inception_forward_cuda(x, packed, spec, out=out)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            ok, err, msg = P.check_against(out.cpu(), ref, list(range(n)), P.TOLERANCE_BLOCK[dt])
            failures += not ok
            print(f"{impl:6s} {name:22s} N={n} {h}x{w} {dt:4s} {layout:13s} "
                  f"{'ok' if ok else 'FAIL'} rel err {R.fmt(err, 2)} {msg}", flush=True)
    E.set_precision("tf32")  # PyTorch's defaults back
    print(f"sanitize_cases: {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
