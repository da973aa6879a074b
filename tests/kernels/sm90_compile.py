"""Compile a Triton or Gluon kernel for sm_90 without a GPU (Triton's compiler and its ptxas).

The kernel tests' compile checks run this in a subprocess (a fresh triton cache, no TRITON_INTERPRET), so that a
GPU-only code path cannot rot unnoticed on the CPU CI: `compile_sm90(fn, args, constexprs, options)` gives the
kernel the signature, specialization (ints equal to 1, 16-divisibility) and constants a launch with `args` would;
`run_compile_check(code, tmp_path)` runs such a check script and returns what it printed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import triton
from triton._C.libtriton import native_specialize_impl
from triton.backends.compiler import BaseBackend, GPUTarget


def compile_sm90(fn, args: list, constexprs: dict, options: dict, source=None):
    """The compiled kernel (asm, metadata) of `fn` for sm_90; `source`: the AST source class (Gluon's for Gluon)."""
    sig, consts, attrs, it = {}, {}, {}, iter(args)
    for i, p in enumerate(fn.params):
        if p.is_constexpr:
            sig[p.name], consts[(i,)] = "constexpr", constexprs[p.name]
            continue
        ty, attr = native_specialize_impl(BaseBackend, next(it), False, True, True)
        sig[p.name] = ty
        if ty == "constexpr":
            consts[(i,)] = attr
        elif isinstance(attr, str):
            attrs[(i,)] = BaseBackend.parse_attr(attr)
    src = (source or triton.compiler.ASTSource)(fn, sig, constexprs=consts, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 64), options=options)


def run_compile_check(code: str, cache_dir: Path, first_on_path: str = "") -> str:
    """stdout of `code` run in a fresh Python: no TRITON_INTERPRET, an empty triton cache in `cache_dir` (a real
    compile every time, no cache left behind), this repository importable (for this module) and `first_on_path`
    (e.g. another triton install) ahead of everything. Skips the test where triton's ptxas is missing."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(cache_dir)
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (first_on_path, repo, env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode and "ptxas" in proc.stderr and "not found" in proc.stderr.lower():
        pytest.skip("triton's ptxas is not available here")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout
