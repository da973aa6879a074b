"""The compiled extension golf._C (csrc/), if it was built. Importing it registers the `golf::` torch ops."""

from __future__ import annotations

import warnings

import torch  # noqa: F401  (torch must be loaded before the extension)

try:
    from golf import _C  # noqa: F401

    HAS_EXT = True
    IMPORT_ERROR: str | None = None
except ImportError as e:  # a source checkout without `pip install -e .`
    HAS_EXT = False
    IMPORT_ERROR = str(e)


def has_cuda_ops() -> bool:
    """True when golf._C was built with its CUDA sources."""
    return HAS_EXT and torch._C._dispatch_has_kernel_for_dispatch_key("golf::gptq_block_update", "CUDA")


def warn_missing(op: str) -> None:
    warnings.warn(
        f"golf._C is not built ({IMPORT_ERROR}); {op} uses its pure-torch reference. "
        "Rebuild with `pip install --no-build-isolation -e .`",
        RuntimeWarning,
        stacklevel=3,
    )
