"""What a benchmark run needs first: CUDA or Triton's interpreter, the package of this checkout,
compute dtypes, and the record of the environment it ran in.

Nothing here imports ``fused_inception`` at module level: the scripts decide first whether CUDA is
there, and without it set ``TRITON_INTERPRET=1`` *before* the package (and so Triton's kernels)
is imported.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"


def use_interpreter_if_no_cuda(force_cpu: bool = False) -> bool:
    """True when this run has CUDA (and ``force_cpu`` is off). Otherwise set ``TRITON_INTERPRET=1``
    (unless the caller set it), which must happen before ``fused_inception`` is imported, and
    return False."""
    if torch.cuda.is_available() and not force_cpu:
        return True
    if "fused_inception" in sys.modules:
        print("note: fused_inception was imported before the interpreter could be switched on",
              file=sys.stderr)
    elif not os.environ.get("TRITON_INTERPRET"):
        os.environ["TRITON_INTERPRET"] = "1"
    return False


def import_fused_inception():
    """The package of this checkout (the benchmarks measure the code beside them)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    import fused_inception

    return fused_inception


def interpreter_on() -> bool:
    mod = sys.modules.get("fused_inception.kernels")
    return bool(mod is not None and mod.interpreting())


# -- dtypes ---------------------------------------------------------------------------------------
DTYPE_CHOICES = ("fp32", "tf32", "fp16", "bf16")
_TORCH_DTYPE = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    return _TORCH_DTYPE[name]


def element_bytes(name: str) -> int:
    return torch.empty((), dtype=_TORCH_DTYPE[name]).element_size()


def set_precision(name: str) -> None:
    """fp32 means full fp32 (TF32 off for convs and matmuls); tf32 turns TF32 on for both.

    The fused Triton kernel follows ``torch.backends.cudnn.allow_tf32`` (PyTorch's conv rule).
    """
    tf32 = name == "tf32"
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32



def fused_types() -> tuple[type, ...]:
    mod = sys.modules.get("fused_inception.module")
    return (mod.FusedInception,) if mod is not None else ()


# -- environment ----------------------------------------------------------------------------------
def _run(cmd: list[str], timeout: float = 10) -> str | None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


NVSMI_FIELDS = ("name", "driver_version", "pstate", "clocks.sm", "clocks.mem", "clocks.max.sm",
                "clocks.max.mem", "power.draw", "power.limit", "temperature.gpu")


def nvidia_smi_query() -> dict | None:
    """Read-only ``nvidia-smi --query-gpu`` of the GPUs' name, driver, clocks, power and temperature."""
    if shutil.which("nvidia-smi") is None:
        return None
    text = _run(["nvidia-smi", f"--query-gpu={','.join(NVSMI_FIELDS)}", "--format=csv,noheader"])
    if text:
        return {"gpus": [dict(zip(NVSMI_FIELDS, (v.strip() for v in line.split(",")))) for line in text.splitlines()]}
    # One field this driver does not know fails the whole query: ask field by field.
    gpus: list[dict] = []
    for f in NVSMI_FIELDS:
        for i, v in enumerate((_run(["nvidia-smi", f"--query-gpu={f}", "--format=csv,noheader"]) or "").splitlines()):
            while len(gpus) <= i:
                gpus.append({})
            gpus[i][f] = v.strip()
    return {"gpus": gpus} if gpus else None


def environment() -> dict:
    try:
        triton_version = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:  # the package runs without Triton (reference backend)
        triton_version = None
    env: dict = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "triton": triton_version,
        "triton_interpret": os.environ.get("TRITON_INTERPRET"),
        "fused_inception_env": {k: v for k, v in os.environ.items() if k.startswith("FUSED_INCEPTION_")},
        "git_commit": _run(["git", "rev-parse", "HEAD"]),
        "git_dirty": bool(_run(["git", "status", "--porcelain", "--untracked-files=no"])),
        "cuda_available": torch.cuda.is_available(),
    }
    fi = sys.modules.get("fused_inception")
    if fi is not None:
        env["fused_inception"] = {"version": getattr(fi, "__version__", None), "path": str(Path(fi.__file__).parent)}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env["gpu"] = {
            "name": p.name,
            "capability": f"{p.major}.{p.minor}",
            "multiprocessors": p.multi_processor_count,
            "memory_gib": round(p.total_memory / 2**30, 1),
            "l2_bytes": l2_bytes(),
        }
        env["nvidia_smi_start"] = nvidia_smi_query()
    return env


def l2_bytes() -> int:
    p = torch.cuda.get_device_properties(0)
    return int(getattr(p, "L2_cache_size", 0) or 50 * 2**20)
