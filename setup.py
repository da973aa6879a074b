"""Builds golf._C from csrc/: the C++ sources always, the CUDA sources (.cu) only when torch has CUDA
and nvcc exists. GOLF_CUDA_BUILD=auto|0|1 overrides (1 fails clearly when CUDA cannot be built);
GOLF_CUDA_ARCHS (default "90") picks the SM targets. Install with --no-build-isolation: setup imports torch.
"""

import glob
import os
import shutil

from setuptools import find_packages, setup


def _cuda_build_wanted(torch_cuda, cuda_home):
    mode = os.environ.get("GOLF_CUDA_BUILD", "auto").strip().lower()
    if mode not in ("auto", "0", "1"):
        raise RuntimeError(f"GOLF_CUDA_BUILD={mode!r}: use auto, 0 or 1")
    nvcc = cuda_home and (os.path.exists(os.path.join(cuda_home, "bin", "nvcc")) or shutil.which("nvcc"))
    available = torch_cuda is not None and bool(nvcc)
    if mode == "1" and not available:
        raise RuntimeError(
            "GOLF_CUDA_BUILD=1 but CUDA cannot be built: "
            + ("this torch is a CPU build" if torch_cuda is None else "no nvcc under CUDA_HOME")
            + ". Install a CUDA torch and the CUDA toolkit, or use GOLF_CUDA_BUILD=auto."
        )
    return available and mode != "0"


def _extensions():
    cpp = sorted(glob.glob("csrc/*.cpp"))
    cu = sorted(glob.glob("csrc/*.cu"))
    if not cpp:
        return [], {}
    import torch
    from torch.utils import cpp_extension

    if _cuda_build_wanted(torch.version.cuda, cpp_extension.CUDA_HOME):
        archs = os.environ.get("GOLF_CUDA_ARCHS", "90").replace(",", " ").split()
        gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
        ext = cpp_extension.CUDAExtension(
            "golf._C",
            cpp + cu,
            define_macros=[("GOLF_WITH_CUDA", None)],
            extra_compile_args={"cxx": ["-O3", "-fopenmp"], "nvcc": ["-O3", "--use_fast_math", *gencode]},
            extra_link_args=["-fopenmp"],
        )
    else:
        ext = cpp_extension.CppExtension(
            "golf._C", cpp, extra_compile_args=["-O3", "-fopenmp"], extra_link_args=["-fopenmp"]
        )
    return [ext], {"build_ext": cpp_extension.BuildExtension}


ext_modules, cmdclass = _extensions()
setup(
    packages=find_packages(include=["golf", "golf.*"]) + ["golf.kernels"],
    package_dir={"golf.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
