"""The packed token format, `lmrefinery-packed-v1`: one home for writing, verifying and reading it.

A packed folder holds, per split (`train`, `val`), shards `NAME-00000.bin` (little-endian token ids, uint16 when
the vocabulary fits, else uint32; EOS after every document) with `NAME-00000.idx` (little-endian uint64 document end
offsets, in tokens, relative to the shard), and `manifest.json`: format, tokenizer (vocab_size, eos_id, ...), dtype,
per split its token / document / text byte totals and shard list, and `files` (sha256 and size of every file).
Every name in a manifest is a plain file name inside its folder.

Writers: `jobs/pack.py` (Spark) and `model/toy_pack.py` (pure Python) use `ShardWriter`, `shard_file_names`,
`build_manifest` and `write_manifest`. Checks: `verify`. Readers: `PackedSplit` (the trainer's memory-mapped view),
`read_documents`, `read_index`.

Pure Python and numpy: no Spark, no torch, nothing from jobs/ or model/.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re

import numpy as np

from udfs.common import UserError
from udfs.tokenize import sha256_file, token_dtype  # noqa: F401  (token_dtype: the format's dtype rule)

FORMAT = "lmrefinery-packed-v1"
MANIFEST = "manifest.json"
# `jobs/pack.py --per-domain`: one packed folder per domain, listed in this file beside them
DOMAINS_FORMAT = "lmrefinery-packed-domains-v1"
DOMAINS_FILE = "domains.json"
INDEX_DTYPE = np.dtype("<u8")  # document end offsets
MANIFEST_KEYS = ("tokenizer", "dtype", "splits", "files")
LEVELS = ("full", "size", "none")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


class PackedError(UserError):
    """A packed folder does not match its manifest (missing, truncated or corrupted file, wrong dtype...)."""


# ---- names ----------------------------------------------------------------------------------------------------
def shard_file_names(split: str, number: int) -> tuple[str, str]:
    """The `.bin` and `.idx` names of shard `number` of `split`."""
    return f"{split}-{number:05d}.bin", f"{split}-{number:05d}.idx"


def is_plain_name(name) -> bool:
    """A file name inside the folder: no separators, no '..', nothing absolute."""
    return isinstance(name, str) and bool(_PLAIN_NAME.fullmatch(name)) and ".." not in name


# ---- writing --------------------------------------------------------------------------------------------------
def index_bytes(ends: np.ndarray) -> bytes:
    """Document end offsets as they are stored in an `.idx` file."""
    return np.asarray(ends).astype(INDEX_DTYPE).tobytes()


def file_entry(path: str) -> dict:
    """A manifest `files` entry for a file already written."""
    return {"sha256": sha256_file(path), "bytes": os.path.getsize(path)}


class ShardWriter:
    """Streams one shard's `.bin` and `.idx` to disk, hashing both as it goes.

    `write_tokens(block)` appends token bytes (already in the shard's dtype); `end_documents(rel_ends)` then records
    the end offsets of the documents those tokens hold, relative to the first of them. `close()` returns the shard's
    counts, sizes and sha256s."""

    def __init__(self, bin_path: str, idx_path: str):
        self.bin_path, self.idx_path = bin_path, idx_path
        self.fb = open(bin_path, "wb")
        self.fi = open(idx_path, "wb")
        self.hb, self.hi = hashlib.sha256(), hashlib.sha256()
        self.tokens = self.documents = self.bin_bytes = self.idx_bytes = 0

    def write_tokens(self, block) -> None:
        self.fb.write(block)
        self.hb.update(block)
        self.bin_bytes += len(block)

    def end_documents(self, rel_ends: np.ndarray) -> None:
        ends = index_bytes(self.tokens + rel_ends.astype(np.uint64))
        self.fi.write(ends)
        self.hi.update(ends)
        self.tokens += int(rel_ends[-1])
        self.documents += len(rel_ends)
        self.idx_bytes += len(ends)

    def add(self, tokens: np.ndarray, doc_lengths) -> None:
        """Whole documents at once: `tokens` in the shard's dtype, `doc_lengths` their lengths (EOS included)."""
        self.write_tokens(np.ascontiguousarray(tokens).tobytes())
        self.end_documents(np.cumsum(np.asarray(doc_lengths, dtype=np.int64)))

    def close(self) -> dict:
        self.fb.close()
        self.fi.close()
        return {"tokens": self.tokens, "documents": self.documents,
                "bin_bytes": self.bin_bytes, "bin_sha256": self.hb.hexdigest(),
                "idx_bytes": self.idx_bytes, "idx_sha256": self.hi.hexdigest()}


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_manifest(tokenizer: dict, dtype, seed: int, source: dict | None, mixture_weights: dict | None,
                   splits: dict, files: dict, extra: dict | None = None) -> dict:
    """The manifest of a packed folder, keys in their usual order; `extra` keys come last."""
    manifest = {
        "format": FORMAT,
        "tokenizer": tokenizer,
        "dtype": np.dtype(dtype).name,
        "seed": int(seed),
        "source": source or {"table": None, "version": None},
        "mixture_weights": mixture_weights,
        "splits": splits,
        "files": dict(sorted(files.items())),
        "created_at": utc_now(),
    }
    manifest.update(extra or {})
    return manifest


def write_manifest(packed_dir: str, manifest: dict) -> None:
    with open(os.path.join(packed_dir, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")


# ---- verification ---------------------------------------------------------------------------------------------
def _read_json(folder: str, name: str, written_by: str) -> dict:
    path = os.path.join(folder, name)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise PackedError(f"no {name} in {folder} (expected the output of {written_by})") from None
    except ValueError as e:
        raise PackedError(f"{path} is not valid JSON: {e}") from None


def read_manifest(packed_dir: str) -> dict:
    """The manifest's JSON as it is (no checks beyond parsing)."""
    return _read_json(packed_dir, MANIFEST, "jobs/pack.py")


def write_domains(out_dir: str, index: dict) -> None:
    """domains.json of a per-domain pack (written last, atomically: its presence means every folder is done)."""
    tmp = os.path.join(out_dir, DOMAINS_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"format": DOMAINS_FORMAT, **index}, f, indent=2)
    os.replace(tmp, os.path.join(out_dir, DOMAINS_FILE))


def read_domains(out_dir: str) -> dict:
    """domains.json of a per-domain pack: {"domains": {domain: {"dir": ..., ...}}, ...}, format checked."""
    d = _read_json(out_dir, DOMAINS_FILE, "jobs/pack.py --per-domain")
    if d.get("format") != DOMAINS_FORMAT:
        raise PackedError(f"{os.path.join(out_dir, DOMAINS_FILE)}: format {d.get('format')!r}, "
                          f"expected {DOMAINS_FORMAT}")
    return d


def domain_folders(out_dir: str) -> dict[str, str]:
    """{domain: its packed folder} of a per-domain pack."""
    return {d: os.path.join(out_dir, v["dir"]) for d, v in read_domains(out_dir)["domains"].items()}


def load_manifest(packed_dir: str) -> dict:
    """The manifest, checked for its format name and top-level keys."""
    m = read_manifest(packed_dir)
    path = os.path.join(packed_dir, MANIFEST)
    if m.get("format") != FORMAT:
        raise PackedError(f"{path}: format is {m.get('format')!r}, expected {FORMAT!r}")
    for key in MANIFEST_KEYS:
        if key not in m:
            raise PackedError(f"{path}: missing key {key!r}")
    return m


def read_index(path: str) -> np.ndarray:
    """An `.idx` file's document end offsets as int64."""
    return np.fromfile(path, dtype=INDEX_DTYPE).astype(np.int64)


def _tokens(path: str, dtype: np.dtype, nbytes: int) -> np.ndarray:
    return np.memmap(path, dtype=dtype, mode="r") if nbytes else np.zeros(0, dtype)


def verify(packed_dir: str, manifest: dict | None = None, splits=None, level: str = "full",
           check_ids: bool = False) -> dict:
    """Check a packed folder against its manifest; returns the manifest or raises PackedError saying what is wrong.

    `manifest`: the one to check against (default: `manifest.json`, format and keys checked). `splits`: only these
    splits' shard files (default: every split and every file the manifest lists). `level`:
      "none"  names are plain and listed, files exist, each `.bin` holds exactly `tokens` tokens of the dtype;
      "size"  also every file's size, and each `.idx` holds `documents` increasing end offsets up to `tokens`
              with EOS before every one of them;
      "full"  also every file's sha256.
    `check_ids`: also read every token and refuse ids outside the vocabulary. Always: the dtype fits the
    vocabulary and each split's totals equal the sum of its shards."""
    if level not in LEVELS:
        raise ValueError(f"verify level must be one of {LEVELS}, got {level!r}")
    m = load_manifest(packed_dir) if manifest is None else manifest
    path = os.path.join(packed_dir, MANIFEST)
    vocab, eos = int(m["tokenizer"]["vocab_size"]), int(m["tokenizer"]["eos_id"])
    want = token_dtype(vocab)
    if np.dtype(m["dtype"]).newbyteorder("<") != want:
        raise PackedError(f"{path}: dtype {m['dtype']!r} does not fit vocab_size {vocab} (expected {want.name})")
    names = list(m["splits"]) if splits is None else list(splits)
    for split in names:
        if split not in m["splits"]:
            raise PackedError(f"manifest has no split {split!r} (has {sorted(m['splits'])})")
    shard_files = [sh[key] for split in names for sh in m["splits"][split]["shards"] for key in ("bin", "idx")]
    scope = shard_files if splits is not None else list(dict.fromkeys([*m["files"], *shard_files]))
    shard_set = set(shard_files)
    for name in scope:
        _check_file(packed_dir, m, name, level, "shard file" if name in shard_set else "file")
    for split in names:
        info = m["splits"][split]
        tokens = docs = 0
        for sh in info["shards"]:
            bin_path = os.path.join(packed_dir, sh["bin"])
            nbytes = os.path.getsize(bin_path)
            if nbytes != int(sh["tokens"]) * want.itemsize:
                raise PackedError(f"{sh['bin']}: {nbytes} bytes is not {sh['tokens']} tokens of {want.name}")
            if level != "none":
                _check_index(packed_dir, sh, want, eos)
            if check_ids:
                data = _tokens(bin_path, want, nbytes)
                for s in range(0, len(data), 1 << 24):
                    if int(data[s:s + (1 << 24)].max()) >= vocab:
                        raise PackedError(f"{sh['bin']}: token id >= vocab_size {vocab}")
                del data
            tokens += int(sh["tokens"])
            docs += int(sh["documents"])
        want_docs = int(info.get("documents", docs))
        if (tokens, docs) != (int(info["tokens"]), want_docs):
            raise PackedError(f"split {split}: shards hold {tokens} tokens / {docs} documents, manifest says "
                              f"{info['tokens']} / {info.get('documents')}")
    return m


def _check_file(packed_dir: str, m: dict, name, level: str, kind: str) -> None:
    if not is_plain_name(name):
        raise PackedError(f"manifest in {packed_dir} names {kind} {name!r}, which is not a plain file name in that "
                          f"folder (refused)")
    meta = m["files"].get(name)
    if meta is None:
        raise PackedError(f"{name} is not listed in the manifest's files")
    fp = os.path.join(packed_dir, name)
    if not os.path.isfile(fp):
        raise PackedError(f"{name}: file missing from {packed_dir}")
    if level == "none":
        return
    size = os.path.getsize(fp)
    if size != int(meta["bytes"]):
        raise PackedError(f"{name}: {size} bytes, manifest says {meta['bytes']} (truncated or overwritten)")
    if level == "full" and sha256_file(fp) != meta["sha256"]:
        raise PackedError(f"{name}: sha256 does not match the manifest (corrupted {kind.split()[0]})")


def _check_index(packed_dir: str, sh: dict, dtype: np.dtype, eos: int) -> None:
    idx = read_index(os.path.join(packed_dir, sh["idx"]))
    if len(idx) != int(sh["documents"]):
        raise PackedError(f"{sh['idx']}: {len(idx)} offsets, manifest says {sh['documents']} documents")
    if not len(idx):
        return
    if idx[0] < 1 or np.any(np.diff(idx) < 1) or idx[-1] != int(sh["tokens"]):
        raise PackedError(f"{sh['idx']}: offsets are not increasing up to the shard's {sh['tokens']} tokens")
    # the token before every document end must be EOS; a mismatch means the dtype or layout is wrong
    data = np.memmap(os.path.join(packed_dir, sh["bin"]), dtype=dtype, mode="r")
    if np.any(data[idx - 1] != eos):
        raise PackedError(f"{sh['bin']}: a document does not end with eos_id {eos} at the offsets in {sh['idx']} "
                          f"(wrong dtype or corrupted shard)")


_verify = verify  # PackedSplit's `verify` argument shadows the function


# ---- reading --------------------------------------------------------------------------------------------------
class PackedSplit:
    """The shards of one split, verified against the manifest and memory-mapped as one virtual token stream (every
    document ends with EOS, so a shard boundary is just another document boundary)."""

    def __init__(self, packed_dir: str, split: str, manifest: dict | None = None, verify: str = "full"):
        """verify: "full" (sizes, sha256, index consistency), "size" (no hashing), or "none" (see `verify`)."""
        self.dir = packed_dir
        self.split = split
        self.manifest = manifest or load_manifest(packed_dir)
        m = _verify(packed_dir, self.manifest, splits=[split], level=verify)
        tok = m["tokenizer"]
        self.vocab_size = int(tok["vocab_size"])
        self.eos_id = int(tok["eos_id"])
        self.dtype = token_dtype(self.vocab_size)
        info = m["splits"][split]
        self.shard_meta = list(info["shards"])
        self.shards, self.docs_per_shard = [], []
        for sh in self.shard_meta:
            path = os.path.join(packed_dir, sh["bin"])
            self.shards.append(_tokens(path, self.dtype, os.path.getsize(path)))
            self.docs_per_shard.append(int(sh["documents"]))
        lens = [len(s) for s in self.shards]
        self.offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        self.n_tokens = int(self.offsets[-1])
        self.text_bytes = int(info.get("text_bytes", 0))

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start+length) of the virtual concatenation, as int64."""
        out = np.empty(length, dtype=np.int64)
        pos, filled = start, 0
        i = int(np.searchsorted(self.offsets, start, side="right")) - 1
        while filled < length:
            lo = pos - int(self.offsets[i])
            take = min(length - filled, len(self.shards[i]) - lo)
            out[filled:filled + take] = self.shards[i][lo:lo + take]
            filled += take
            pos += take
            i += 1
        return out

    def doc_ends(self, shard: int) -> np.ndarray:
        """Document end offsets (int64, relative to the shard) of shard number `shard`."""
        return read_index(os.path.join(self.dir, self.shard_meta[shard]["idx"]))

    def documents(self):
        """Each document's token array (EOS included), in order, one shard in memory at a time."""
        for i, data in enumerate(self.shards):
            data = np.array(data)
            start = 0
            for end in self.doc_ends(i):
                yield data[start:end]
                start = end


def read_documents(packed_dir: str, split: str):
    """Yield each document's token array (EOS included) of a split, in order, after checking the whole folder
    (sizes, indexes, token ids; no hashes)."""
    m = verify(packed_dir, level="size", check_ids=True)
    yield from PackedSplit(packed_dir, split, m, verify="none").documents()
