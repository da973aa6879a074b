"""Compile a Triton or Gluon kernel for sm_90 without a GPU (Triton's compiler and its ptxas).

The kernel tests' compile checks run this in a subprocess (a fresh triton cache, no TRITON_INTERPRET), so that a
GPU-only code path cannot rot unnoticed on the CPU CI: `compile_sm90(fn, args, constexprs, options)` gives the
kernel the signature, specialization (ints equal to 1, 16-divisibility) and constants a launch with `args` would.
"""

from __future__ import annotations

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
