"""Triton kernels, installed as golf.kernels (never import a top-level `kernels`: that name belongs to a
PyPI package). Only @triton.jit functions and their host launchers live here; golf.ops wraps them."""
