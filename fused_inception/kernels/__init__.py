"""The Triton kernel (``triton_inception``: jit code and launcher; ``schedule``: its work table;
``tuning``: its configs), and what the package knows about Triton without needing it. The CUDA
extension's loader is ``fused_inception/cuda_ext.py``.

Triton is optional (none on macOS or Windows, or a build left without it): the package imports and
runs the reference backend without it, and the Triton launcher (``triton_inception``) is imported
on the first launch.
"""

from __future__ import annotations

import os

__all__ = ["interpreting", "require_triton", "triton_available"]

# Tried once, here: torch.compile traces the backend choice, and an import inside a trace that
# fails is a graph break.
try:
    import triton  # noqa: F401

    _IMPORT_ERROR = None
except ImportError as exc:
    _IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

# Triton binds a kernel to the interpreter or the compiler when it is defined, and the launcher is
# defined later, on first use: the mode is fixed here, when fused_inception is imported (the
# launcher refuses a Triton that decided otherwise). Triton's own reading of the variable.
_INTERPRET = os.environ.get("TRITON_INTERPRET", "").lower() in ("1", "true", "on", "yes", "y")


def triton_available() -> bool:
    """True when ``import triton`` worked (when fused_inception was imported)."""
    return _IMPORT_ERROR is None


def interpreting() -> bool:
    """True when the Triton kernels run in Triton's CPU interpreter: Triton is installed and
    ``TRITON_INTERPRET`` was set when fused_inception was imported."""
    return _INTERPRET and _IMPORT_ERROR is None


def require_triton() -> None:
    """Raise a RuntimeError that says Triton is missing and what to do about it."""
    if _IMPORT_ERROR is not None:
        raise RuntimeError(
            f"the Triton backend needs Triton, which cannot be imported here ({_IMPORT_ERROR}). Install it "
            "with `pip install triton` (Linux; on Windows the community build `triton-windows`), or use "
            "backend='auto' or 'reference', which compute the block with PyTorch ops.")
