"""The code half of the 16,000,000-byte budget (techniques.md §4.15).

`code_bytes` counts exactly the golf code that evaluating an artifact loads: it imports the entry modules
in a fresh interpreter, lists every golf module that import pulled in, and returns the brotli-11 size of
their sources concatenated in path order. golf._C counts as the csrc/ sources it is built from (when they
are present, i.e. in a source checkout). Third-party packages (torch, numpy, ...) are not counted, as in
the records. The records count the code in other ways (raw bytes of train_gpt.py, or a minified and
compressed self-extracting wrapper); brotli-11 of the plain sources sits between the two.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import brotli

import golf

DEFAULT_ENTRY_MODULES = ("golf.eval.artifact_eval",)  # what `golf eval ARTIFACT` imports to score a file
_PACKAGE_ROOT = Path(golf.__file__).resolve().parent
_CSRC = _PACKAGE_ROOT.parent / "csrc"
_CSRC_SUFFIXES = (".cpp", ".cu", ".h", ".cuh")

# Runs in the fresh interpreter: import the entry modules, print the golf modules now loaded.
_LISTER = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
mods = {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items()) if n == "golf" or n.startswith("golf.")}
print(json.dumps(mods))
"""


@dataclass
class CodeSize:
    bytes: int  # brotli-11 compressed size of the concatenated sources
    files: tuple[str, ...]  # the counted files, relative to the repository root, in concatenation order
    raw_bytes: int  # their size before compression


def _loaded_golf_modules(entry_modules: tuple[str, ...]) -> dict[str, str | None]:
    proc = subprocess.run(
        [sys.executable, "-c", _LISTER, *entry_modules], capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise ValueError(f"code_bytes: importing {list(entry_modules)} failed: {tail[0]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _source_files(modules: dict[str, str | None]) -> list[Path]:
    files: set[Path] = set()
    for name, file in modules.items():
        if file is None:  # a namespace package: no code of its own
            continue
        path = Path(file).resolve()
        if path.suffix == ".py":
            files.add(path)
        elif name == "golf._C" and _CSRC.is_dir():
            files.update(p.resolve() for p in _CSRC.iterdir() if p.suffix in _CSRC_SUFFIXES)
    return sorted(files, key=lambda p: _relative(p))


def _relative(path: Path) -> str:
    try:
        return path.relative_to(_PACKAGE_ROOT.parent).as_posix()
    except ValueError:
        return path.as_posix()


def code_bytes(entry_modules: tuple[str, ...] = DEFAULT_ENTRY_MODULES) -> CodeSize:
    """Compressed size of the golf code loaded by importing `entry_modules` (see the module docstring)."""
    if isinstance(entry_modules, str):
        entry_modules = (entry_modules,)
    bad = [m for m in entry_modules if not (m == "golf" or m.startswith("golf."))]
    if bad:
        raise ValueError(f"code_bytes counts golf's own code; entry modules {bad} are not golf modules")
    files = _source_files(_loaded_golf_modules(tuple(entry_modules)))
    raw = b"".join(p.read_bytes() for p in files)
    return CodeSize(len(brotli.compress(raw, quality=11)), tuple(_relative(p) for p in files), len(raw))


def check_budget(model_bytes: int, code_bytes: int, budget: int, allow_over: bool = False) -> int:
    """Total bytes (model + code); ValueError when it exceeds `budget` (a warning if allow_over)."""
    total = int(model_bytes) + int(code_bytes)
    if total <= budget:
        return total
    msg = (
        f"artifact is {total - budget:,} bytes over the budget of {budget:,} (model {model_bytes:,} + code "
        f"{code_bytes:,} = {total:,}). Shrink it: fewer bits (quant.bits, quant.embed_bits), a larger SDClip "
        "factor (quant.clip=sdclip with a higher quant.clip_k / quant.embed_clip_k), a smaller model "
        "(model.num_layers, model.model_dim, model.mlp_mult) or another compressor (quant.compressor); or "
        "accept it with quant.allow_over_budget=true"
    )
    if not allow_over:
        raise ValueError(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=2)
    return total
