#!/usr/bin/env python
"""What reduced precision does to an FID value.

(a) Measure: the relative error ||f - f_ref|| / ||f_ref|| of each image's pool3 features from the
fused FID Inception (every Mixed block converted, backend "triton"; Triton's interpreter without
CUDA) in fp16 and bf16, against the unfused network in fp64 on CPU, next to the unfused PyTorch
network's own error in the same dtype. Random weights (``random_fid_inception``), seeded; a few
random images. The whole network runs in the dtype, as after ``model.half()``: the stem convs and
pools in PyTorch, the blocks fused; where PyTorch cannot run a conv in that dtype on the device,
the non-block layers run in fp32 and only the fused blocks in the dtype (``--mode blocks`` forces
it; the JSON says which ran). The full pipeline resizes to 299x299; the interpreter needs minutes per forward, so
``--size`` runs the trunk on a smaller resize instead (75 is Inception-v3's minimum).

(b) Synthetic: two sets of N = 4096 features of D = 2048 drawn from two different distributions
shaped like pool3 features: z ~ N(m, A A^T + diag(s^2)) with a rank-128 factor A and lognormal
means m (about 0.4), then ReLU (as pool3 averages post-ReLU maps: nonnegative, ~16% zeros, mean
norm ~25); the second set's m, A, s perturbed by ~5%. Their FID (~27 here) is compared with the
FID after each feature vector is perturbed by f + eps ||f|| u / ||u|| (u Gaussian) for the
measured fp16 and bf16 errors (the worst image's; in the interpreter, also the unfused PyTorch bf16
error, as its own bf16 casts truncate) and for TF32's unit roundoff 2^-11, over seeds.
The perturbation is independent per image, a model of rounding noise. A systematic error is not
modelled: a common scale bias b of all features multiplies FID by (1 + b)^2; (a) reports b.

Writes a markdown table to stdout and JSON (``--out``) with the command that ran.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
import warnings
from pathlib import Path

import environment as E
import torch
import torch.nn.functional as F

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TF32_EPS = 2.0 ** -11


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser("fid_precision.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=75, help="resize to SIZE x SIZE before the trunk (299: the "
                   "full FID pipeline; default 75, Inception-v3's minimum, minutes instead of tens of minutes)")
    p.add_argument("--images", type=int, default=4, help="random images measured (default 4)")
    p.add_argument("--dtypes", default="fp16,bf16", help="fused dtypes measured, of fp32,fp16,bf16")
    p.add_argument("--mode", choices=("auto", "whole", "blocks"), default="auto",
                   help="whole: the network in the dtype; blocks: only the fused blocks (the rest fp32); "
                   "auto: whole where PyTorch's convs run in the dtype on the device")
    p.add_argument("--skip-measure", action="store_true", help="skip (a); use --rel-err-fp16/--rel-err-bf16")
    p.add_argument("--rel-err-fp16", type=float, default=None, help="fp16 relative feature error for (b)")
    p.add_argument("--rel-err-bf16", type=float, default=None, help="bf16 relative feature error for (b)")
    p.add_argument("--seeds", type=int, default=5, help="seeds of the synthetic study (default 5)")
    p.add_argument("--n", type=int, default=4096, help="features per set in (b) (default 4096)")
    p.add_argument("--cpu", action="store_true", help="Triton's interpreter even where CUDA is available")
    p.add_argument("--out", type=Path, default=E.RESULTS_DIR / "fid_precision.json")
    return p.parse_args(argv)


# -- (a) the measurement ----------------------------------------------------------------------------
def random_fid_inception(fi, seed: int):
    """fid_inception_v3 with seeded random weights, fp64: He-scaled convs, BatchNorm affine and
    running statistics near identity, which keep activations at unit scale through the network
    (pool3 features: ~15-50% zeros, mean 0.3-1.7 from 75 to 299). Not calibrated on images: with
    running statistics measured on noise images, a random network amplifies any rounding error
    ~1.5x per layer (fp32 vs fp64 4e-4 at the output), which no trained network does."""
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    uniform = (lambda n, lo, hi: torch.rand(n, generator=g, dtype=torch.float64) * (hi - lo) + lo)
    model = fi.models.fid_inception_v3().double().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=torch.float64)
                               * math.sqrt(2 / m.weight[0].numel()))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(uniform(m.num_features, 0.5, 1.5))
                m.bias.copy_(uniform(m.num_features, -0.5, 0.5))
                m.running_mean.copy_(uniform(m.num_features, -0.2, 0.2))
                m.running_var.copy_(uniform(m.num_features, 0.8, 1.25))
    return model


def trunk(model, x: torch.Tensor, size: int) -> torch.Tensor:
    """FIDInceptionV3.forward with the resize to ``size`` instead of 299 (identical at 299)."""
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return model.features(2 * x - 1)


def blocks_only(model, dtype) -> None:
    """The fused blocks in ``dtype``, everything else fp32: cast at each block's entry and exit."""
    model.float()
    for m in model.modules():
        if type(m).__name__ == "FusedBlock":
            m.to(dtype)
            m.register_forward_pre_hook(lambda _, a: (a[0].to(dtype),))
            m.register_forward_hook(lambda _m, _a, out: out.float())


def conv_runs(device: str, dtype: torch.dtype) -> bool:
    try:
        return F.conv2d(torch.ones(1, 3, 8, 8, device=device, dtype=dtype), torch.ones(4, 3, 3, 3, device=device,
                                                                                        dtype=dtype)) is not None
    except RuntimeError:
        return False


def errors(f: torch.Tensor, ref: torch.Tensor) -> dict:
    """Per-image relative error, its max and mean, and the mean scale bias (f - ref).ref / |ref|^2."""
    err = ((f - ref).norm(dim=1) / ref.norm(dim=1)).tolist()
    bias = ((f - ref) * ref).sum(1) / (ref * ref).sum(1)
    return {"rel_err_per_image": err, "rel_err_max": max(err), "rel_err_mean": sum(err) / len(err),
            "scale_bias_mean": bias.mean().item()}


def measure(fi, args, device: str, cuda: bool) -> dict:
    model = random_fid_inception(fi, 0)
    x = torch.rand(args.images, 3, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        ref = trunk(model, x, args.size)
    fused, report = fi.convert(copy.deepcopy(model), backend="triton", return_report=True)
    out = {"size": args.size, "full_pipeline": args.size == 299, "images": args.images, "source_image": [64, 64],
           "device": device, "replaced_blocks": len(report.replaced), "skipped": report.skipped, "dtypes": {}}
    for name in args.dtypes.split(","):
        dtype, mode = DTYPES[name], args.mode
        if mode == "auto":
            mode = "whole" if conv_runs(device, dtype) else "blocks"
        with torch.no_grad():  # PyTorch's own error in this dtype, for comparison (CPU, unfused)
            eager = trunk(copy.deepcopy(model).to(dtype), x.to(dtype), args.size).double()
        m = copy.deepcopy(fused).to(device)
        m.to(dtype) if mode == "whole" else blocks_only(m, dtype)
        t = time.perf_counter()
        with torch.no_grad():
            f = trunk(m, x.to(device, dtype if mode == "whole" else torch.float32), args.size).double().cpu()
        r = out["dtypes"][name] = {"mode": mode, **errors(f, ref), "seconds": round(time.perf_counter() - t, 1),
                                   "backends": sorted({b.last_backend for b in m.modules()
                                                       if type(b).__name__ == "FusedBlock"}),
                                   "unfused_cpu": errors(eager, ref)}
        if name == "bf16" and not cuda:
            r["note"] = ("Triton's interpreter converts fp32 to bf16 by truncation (toward zero; a GPU rounds to "
                         "nearest): a biased, pessimistic bf16 error")
        print(f"  {name} ({mode}): max {r['rel_err_max']:.3g}, mean {r['rel_err_mean']:.3g}, "
              f"{r['seconds']:.0f} s", file=sys.stderr, flush=True)
    return out


# -- (b) the synthetic study ------------------------------------------------------------------------
def synthetic_sets(seed: int, n: int, d: int = 2048, rank: int = 128):
    g = torch.Generator().manual_seed(seed)
    rn = (lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64))
    m = 0.35 * torch.exp(0.5 * rn(d))
    a, s = rn(d, rank) * 0.03, 0.2 * m
    m2, a2, s2 = m * (1 + 0.05 * rn(d)), a + 0.01 * rn(d, rank), s * 1.05
    sets = [torch.relu(mu + rn(n, rank) @ fa.T + rn(n, d) * sd) for mu, fa, sd in ((m, a, s), (m2, a2, s2))]
    return sets, g


def perturbed(f: torch.Tensor, eps: float, g: torch.Generator) -> torch.Tensor:
    u = torch.randn(f.shape, generator=g, dtype=torch.float64)
    return f + eps * f.norm(dim=1, keepdim=True) * u / u.norm(dim=1, keepdim=True)


def synthetic(levels: dict[str, float], seeds: int, n: int) -> dict:
    from fused_inception.fid import feature_statistics, frechet_distance

    runs = {k: [] for k in levels}
    clean = []
    for seed in range(seeds):
        (f1, f2), g = synthetic_sets(seed, n)
        clean.append(base := frechet_distance(*feature_statistics(f1), *feature_statistics(f2)))
        for k, eps in levels.items():
            p1, p2 = perturbed(f1, eps, g), perturbed(f2, eps, g)
            fid = frechet_distance(*feature_statistics(p1), *feature_statistics(p2))
            runs[k].append(fid - base)
        print(f"  seed {seed}: FID {base:.4f}", file=sys.stderr, flush=True)
    out = {"n": n, "d": 2048, "seeds": seeds, "fid_clean": clean, "levels": {}}
    for k, eps in levels.items():
        dv = runs[k]
        rel = [abs(x) / b for x, b in zip(dv, clean)]
        out["levels"][k] = {"eps": eps, "delta_fid": dv, "abs_delta_mean": sum(map(abs, dv)) / len(dv),
                            "abs_delta_max": max(map(abs, dv)), "signed_delta_mean": sum(dv) / len(dv),
                            "rel_delta_mean": sum(rel) / len(rel), "rel_delta_max": max(rel)}
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.size < 75:
        sys.exit("--size: Inception-v3's trunk needs at least 75x75")
    # Triton's interpreter reads masked-off lanes and computes on them (the results are discarded).
    warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
    cuda = E.use_interpreter_if_no_cuda(force_cpu=args.cpu)
    fi = E.import_fused_inception()
    result = {"benchmark": "fid_precision", "env": E.environment(), "args": {k: str(v) for k, v in vars(args).items()}}
    result["command"] = result["env"]["command"]
    levels = {}
    if not args.skip_measure:
        print(f"(a) measuring at {args.size}x{args.size} ({'CUDA' if cuda else 'Triton interpreter'})...",
              file=sys.stderr, flush=True)
        meas = result["measurement"] = measure(fi, args, "cuda" if cuda else "cpu", cuda)
        levels = {f"{k} fused": v["rel_err_max"] for k, v in meas["dtypes"].items() if k != "fp32"}
        if "bf16" in meas["dtypes"] and not cuda:  # what rounding to nearest gives, as on a GPU
            levels["bf16 unfused PyTorch"] = meas["dtypes"]["bf16"]["unfused_cpu"]["rel_err_max"]
    levels.update({k: v for k in ("fp16", "bf16") if (v := getattr(args, f"rel_err_{k}")) is not None})
    if not levels:
        sys.exit("no fp16/bf16 relative error: measure, or give --rel-err-fp16/--rel-err-bf16")
    levels["tf32 bound"] = TF32_EPS
    print("(b) synthetic study...", file=sys.stderr, flush=True)
    syn = result["synthetic"] = synthetic(levels, args.seeds, args.n)

    if "measurement" in result:
        meas = result["measurement"]
        print(f"\n(a) pool3 features, fused vs unfused fp64, {meas['images']} random images, trunk at "
              f"{meas['size']}x{meas['size']}{' (full pipeline)' if meas['full_pipeline'] else ''}, random weights, "
              f"{meas['device']}{'' if cuda else ' (Triton interpreter)'}\n")
        print("| dtype | runs in | rel. error max, mean | scale bias | unfused PyTorch CPU, same dtype: max, mean, "
              "bias |\n| --- | --- | --- | --- | --- |")
        for k, v in meas["dtypes"].items():
            u = v["unfused_cpu"]
            print(f"| {k} | {'whole network' if v['mode'] == 'whole' else 'fused blocks only'} | "
                  f"{v['rel_err_max']:.3g}, {v['rel_err_mean']:.3g} | {v['scale_bias_mean']:+.2g} | "
                  f"{u['rel_err_max']:.3g}, {u['rel_err_mean']:.3g}, {u['scale_bias_mean']:+.2g} |")
        print("".join(f"\n{k}: {v['note']}." for k, v in meas["dtypes"].items() if "note" in v))
    mean_fid = sum(syn["fid_clean"]) / len(syn["fid_clean"])
    print(f"\n(b) FID change, {syn['n']} + {syn['n']} synthetic 2048-d features, FID {mean_fid:.2f}, "
          f"{syn['seeds']} seeds\n")
    print("| perturbation | eps | abs. change mean | abs. change max | rel. change mean | rel. change max | signed "
          "mean |\n| --- | --- | --- | --- | --- | --- | --- |")
    for k, v in syn["levels"].items():
        print(f"| {k} | {v['eps']:.3g} | {v['abs_delta_mean']:.2e} | {v['abs_delta_max']:.2e} | "
              f"{v['rel_delta_mean']:.2e} | {v['rel_delta_max']:.2e} | {v['signed_delta_mean']:+.2e} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
