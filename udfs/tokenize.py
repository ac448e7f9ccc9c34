"""Tokenizers that work offline, and the per-batch encoding used by the packer.

`load_encoding(spec)` returns a `tiktoken.Encoding` for

* `gpt2` (= `r50k_base` ranks), `r50k_base`, `cl100k_base`, `o200k_base`: the OpenAI rank files, read from the
  project cache (`$LMR_TIKTOKEN_CACHE`, default `<repo>/.cache/tiktoken`, filled by
  `python scripts/install_tokenizers.py`) or from `$TIKTOKEN_CACHE_DIR`, where tiktoken keeps them under the sha1
  hex of their URL. Every file is checked against the sha256 that tiktoken expects. Nothing is downloaded.
* a path to a `.tiktoken` ranks file: when its sha256 is one of the files above it gets that encoding's regex and
  special tokens; otherwise the GPT-2 regex and `<|endoftext|>` = max rank + 1.
* a path to a trained byte-level BPE saved by `udfs.bpe.save_bpe` (JSON, format `lmrefinery-bpe-v1`), or a folder
  holding one as `tokenizer.json` (what `jobs/train_tokenizer.py --out DIR` writes).

Encodings are cached per process, so executors build each one once.
"""
from __future__ import annotations

import base64
import hashlib
import os
import threading

import numpy as np

from udfs.token_format import (CL100K_PAT, ENDOFTEXT, O200K_PAT, R50K_PAT, TokenizerError,  # noqa: F401
                               serialize_ranks)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTALL_HINT = "python scripts/install_tokenizers.py"

_BLOB = "https://openaipublic.blob.core.windows.net/encodings/"
_R50K = {"ranks": "r50k_base", "url": _BLOB + "r50k_base.tiktoken",
         "sha256": "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
         "pat_str": R50K_PAT, "special_tokens": {ENDOFTEXT: 50256}, "n_vocab": 50257}
# URL and sha256 are the ones tiktoken_ext/openai_public.py uses (a test checks they still are).
OPENAI_ENCODINGS = {
    "gpt2": _R50K,
    "r50k_base": _R50K,
    "cl100k_base": {"ranks": "cl100k_base", "url": _BLOB + "cl100k_base.tiktoken",
                    "sha256": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
                    "pat_str": CL100K_PAT,
                    "special_tokens": {ENDOFTEXT: 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                                       "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276},
                    "n_vocab": 100277},
    "o200k_base": {"ranks": "o200k_base", "url": _BLOB + "o200k_base.tiktoken",
                   "sha256": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
                   "pat_str": O200K_PAT, "special_tokens": {ENDOFTEXT: 199999, "<|endofprompt|>": 200018},
                   "n_vocab": 200019},
}
_NAME_BY_SHA = {}
for _n, _info in OPENAI_ENCODINGS.items():
    _NAME_BY_SHA.setdefault(_info["sha256"], _n)


# ---- files ----------------------------------------------------------------------------------------------------
def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def cache_file_name(url: str) -> str:
    """The name tiktoken gives a cached download: sha1 hex of its URL."""
    return hashlib.sha1(url.encode()).hexdigest()


def default_cache_dir() -> str:
    return os.environ.get("LMR_TIKTOKEN_CACHE") or os.path.join(REPO_ROOT, ".cache", "tiktoken")


def cache_dirs() -> list[str]:
    dirs = [default_cache_dir()]
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if os.environ.get(var):
            dirs.append(os.environ[var])
    return dirs


def find_ranks_file(name: str) -> str:
    """Path of the verified rank file for an OpenAI encoding name, or a TokenizerError naming the set-up step."""
    info = OPENAI_ENCODINGS[name]
    key = cache_file_name(info["url"])
    bad = []
    for d in cache_dirs():
        for fn in (key, f"{info['ranks']}.tiktoken"):
            path = os.path.join(d, fn)
            if os.path.isfile(path):
                if sha256_file(path) == info["sha256"]:
                    return os.path.abspath(path)
                bad.append(path)
    where = ", ".join(cache_dirs())
    if bad:
        raise TokenizerError(f"tokenizer {name}: rank file {bad[0]} has the wrong sha256 (corrupt or truncated); "
                             f"run `{INSTALL_HINT} --force`")
    raise TokenizerError(f"tokenizer {name}: rank file not installed (looked in {where}); run `{INSTALL_HINT}` "
                         f"(set LMR_TIKTOKEN_CACHE or TIKTOKEN_CACHE_DIR to use another folder)")


def parse_tiktoken_ranks(data: bytes, source: str = "<bytes>") -> dict[bytes, int]:
    ranks = {}
    for line in data.splitlines():
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except ValueError as e:
            raise TokenizerError(f"{source}: not a .tiktoken ranks file (bad line {line[:60]!r})") from e
    return ranks


# ---- encodings ------------------------------------------------------------------------------------------------
_CACHE: dict = {}
_LOCK = threading.Lock()


def resolve_spec(spec: str) -> dict:
    """Turn a user spec into a small picklable description with absolute paths (resolved once, on the driver)."""
    if spec in OPENAI_ENCODINGS:
        return {"kind": "openai", "name": spec, "spec": spec, "path": find_ranks_file(spec)}
    path = os.path.abspath(os.path.expanduser(spec))
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "tokenizer.json")):
        path = os.path.join(path, "tokenizer.json")  # a folder written by jobs/train_tokenizer.py --out DIR
    if not os.path.isfile(path):
        raise TokenizerError(f"unknown tokenizer {spec!r}: use one of {', '.join(OPENAI_ENCODINGS)}, a .tiktoken "
                             f"ranks file or a trained BPE file (jobs/train_tokenizer.py)")
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    kind = "bpe" if head.startswith(b"{") else "tiktoken_file"
    return {"kind": kind, "name": None, "spec": spec, "path": path}


def load_encoding(spec):
    """A `tiktoken.Encoding` for `spec` (name, .tiktoken path, trained-BPE path, or a `resolve_spec` dict)."""
    resolved = spec if isinstance(spec, dict) else resolve_spec(spec)
    key = (resolved["kind"], resolved["name"], resolved["path"])
    enc = _CACHE.get(key)
    if enc is None:
        with _LOCK:
            enc = _CACHE.get(key)
            if enc is None:
                enc = _build(resolved)
                _CACHE[key] = enc
    return enc


def _build(resolved: dict):
    import tiktoken

    path = resolved["path"]
    if resolved["kind"] == "bpe":
        from udfs.bpe import load_bpe

        saved = load_bpe(path)
        enc = tiktoken.Encoding(saved["name"], pat_str=saved["pat_str"], mergeable_ranks=saved["ranks"],
                                special_tokens=saved["special_tokens"])
        enc.lmr_ranks_sha256 = saved["ranks_sha256"]
        return enc
    if not os.path.isfile(path):
        raise TokenizerError(f"tokenizer file {path} not found on this machine; run `{INSTALL_HINT}` here too")
    with open(path, "rb") as f:
        data = f.read()
    digest = sha256_bytes(data)
    name = resolved["name"] or _NAME_BY_SHA.get(digest)
    if resolved["kind"] == "openai" and digest != OPENAI_ENCODINGS[name]["sha256"]:
        raise TokenizerError(f"tokenizer {name}: {path} has the wrong sha256; run `{INSTALL_HINT} --force`")
    ranks = parse_tiktoken_ranks(data, path)
    if name is not None:
        info = OPENAI_ENCODINGS[name]
        enc = tiktoken.Encoding(name, pat_str=info["pat_str"], mergeable_ranks=ranks,
                                special_tokens=info["special_tokens"])
        assert enc.n_vocab == info["n_vocab"], (name, enc.n_vocab)
    else:  # a custom ranks file: GPT-2 regex, end-of-text after the last rank
        stem = os.path.basename(path).split(".")[0]
        enc = tiktoken.Encoding(stem, pat_str=R50K_PAT, mergeable_ranks=ranks,
                                special_tokens={ENDOFTEXT: max(ranks.values()) + 1})
    enc.lmr_ranks_sha256 = digest
    return enc


def ranks_sha256(enc) -> str:
    """sha256 of the encoding's ranks in .tiktoken form (equals the rank file's sha256 for the OpenAI files)."""
    digest = getattr(enc, "lmr_ranks_sha256", None)
    if digest is None:
        digest = sha256_bytes(serialize_ranks(enc._mergeable_ranks))
        enc.lmr_ranks_sha256 = digest
    return digest


def eos_id(enc) -> int:
    return enc.eot_token


def token_dtype(vocab_size: int) -> np.dtype:
    """Little-endian uint16 when every id fits, else uint32."""
    return np.dtype("<u2") if vocab_size <= 65536 else np.dtype("<u4")


def tokenizer_manifest(spec: str, enc, file: str | None = None) -> dict:
    return {"name": enc.name, "spec": spec, "ranks_sha256": ranks_sha256(enc), "vocab_size": enc.n_vocab,
            "eos_id": eos_id(enc), "file": file}


def encoding_from_manifest(manifest: dict, packed_dir: str):
    """The encoding a packed dataset was made with; checks its ranks hash, vocab size and EOS id."""
    tok = manifest["tokenizer"]
    if tok.get("file"):
        enc = load_encoding(os.path.join(packed_dir, tok["file"]))
    else:
        spec = tok.get("spec") or tok["name"]
        enc = load_encoding(spec if (spec in OPENAI_ENCODINGS or tok["name"] not in OPENAI_ENCODINGS)
                            else tok["name"])
    got = (ranks_sha256(enc), enc.n_vocab, eos_id(enc))
    want = (tok["ranks_sha256"], tok["vocab_size"], tok["eos_id"])
    if got != want:
        raise TokenizerError(f"tokenizer {tok['name']} does not match the manifest in {packed_dir}: "
                             f"(ranks_sha256, vocab_size, eos_id) = {got}, manifest says {want}")
    return enc


# ---- batch encoding -------------------------------------------------------------------------------------------
def ordinary_tokens(enc, text: str) -> np.ndarray:
    """`enc.encode_ordinary(text)` as a uint32 array, straight from tiktoken's Rust buffer (special-token strings
    are plain text)."""
    try:
        return enc.encode_to_numpy(text, disallowed_special=())
    except UnicodeEncodeError:  # lone surrogates: encode_ordinary repairs them the way tiktoken does
        return np.asarray(enc.encode_ordinary(text), dtype=np.uint32)


def encode_with_eos(enc, texts: list[str], dtype) -> tuple[np.ndarray, np.ndarray]:
    """Encode `texts` (ordinary text: special-token strings are plain text) and append EOS to each.

    Returns (flat token array of `dtype`, per-document token counts including EOS). Tokens never become Python int
    lists: building and flattening those cost more than the BPE itself."""
    eos = np.array([eos_id(enc)], dtype=np.uint32)
    parts = []
    counts = np.empty(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        toks = ordinary_tokens(enc, text)
        parts.append(toks)
        parts.append(eos)
        counts[i] = len(toks) + 1
    if not parts:
        return np.empty(0, dtype=dtype), counts
    flat = np.concatenate(parts)
    if np.dtype(dtype).itemsize < 4 and int(flat.max()) > np.iinfo(dtype).max:
        raise ValueError(f"token id {int(flat.max())} does not fit {np.dtype(dtype)}")
    return flat.astype(dtype, copy=False), counts


def count_with_eos(enc, texts: list) -> np.ndarray:
    """Tokens each document takes in a packed stream: its ordinary tokens plus the EOS after it (what
    `encode_with_eos` counts); a null text counts 0 (the packer drops it)."""
    out = np.zeros(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        if text is not None:
            out[i] = len(ordinary_tokens(enc, text)) + 1
    return out


def count_id(enc) -> str:
    """What an `n_tokens` column was counted with: `<encoding name>:<first 16 hex of the ranks' sha256>`, so a
    retrained BPE of the same name never passes for the old one."""
    return f"{enc.name}:{ranks_sha256(enc)[:16]}"


def word_count(text: str) -> int:
    """Whitespace-separated words (the denominator of tokens-per-word)."""
    return len(text.split())
