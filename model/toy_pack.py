"""Write a small packed dataset (the `lmrefinery-packed-v1` contract) straight from Python strings.

For tests, benchmarks and a Spark-free quick start: the real packer is `jobs/pack.py`. The default tokenizer is a
byte-level tiktoken encoding (256 byte tokens + `<|endoftext|>` = 256) that needs no download.

    python -m model.toy_pack --out /tmp/toy/packed /usr/share/common-licenses/*
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os

import numpy as np

BYTES_PAT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def byte_encoding():
    """Byte-level tiktoken encoding: token i is byte i, 256 is <|endoftext|>."""
    import tiktoken

    return tiktoken.Encoding(name="bytes", pat_str=BYTES_PAT,
                             mergeable_ranks={bytes([i]): i for i in range(256)},
                             special_tokens={"<|endoftext|>": 256})


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_packed(out_dir: str, splits: dict[str, list[str]], enc=None, shard_tokens: int = 1 << 20,
                 seed: int = 1337, tokenizer_name: str = "bytes", tokenizer_spec: str = "bytes",
                 save_tokenizer: bool = True) -> dict:
    """Tokenize `splits` ({"train": [doc, ...], "val": [...]}), append EOS to each document, cut into shards of
    about `shard_tokens` (whole documents), write .bin/.idx and manifest.json. Returns the manifest.
    With `save_tokenizer` the encoding is saved as `tokenizer.json` (lmrefinery-bpe-v1) and named in the manifest."""
    enc = enc or byte_encoding()
    os.makedirs(out_dir, exist_ok=True)
    V, eos = enc.n_vocab, enc.eot_token
    dtype = np.uint16 if V <= 65536 else np.uint32
    from udfs.tokenize import ranks_sha256

    tok_file = None
    if save_tokenizer:
        # saved as a zero-merge byte-level BPE, so udfs.tokenize.encoding_from_manifest can load it back
        from udfs.bpe import save_bpe

        tok_file = "tokenizer.json"
        save_bpe({"name": enc.name, "pat_str": enc._pat_str, "special_tokens": enc._special_tokens,
                  "vocab_size": V, "ranks": enc._mergeable_ranks}, os.path.join(out_dir, tok_file))
    manifest = {
        "format": "lmrefinery-packed-v1",
        "tokenizer": {"name": tokenizer_name, "spec": tokenizer_spec, "ranks_sha256": ranks_sha256(enc),
                      "vocab_size": V, "eos_id": eos, "file": tok_file},
        "dtype": np.dtype(dtype).name, "seed": seed,
        "source": {"table": "toy", "version": 0}, "mixture_weights": {},
        "splits": {}, "files": {},
        "created_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    for split, docs in splits.items():
        shards, cur, n = [], [], 0
        info = {"tokens": 0, "documents": 0, "text_bytes": 0, "shards": shards}

        def flush():
            nonlocal cur, n
            if not cur:
                return
            i = len(shards)
            bin_name, idx_name = f"{split}-{i:05d}.bin", f"{split}-{i:05d}.idx"
            toks = np.concatenate(cur).astype(dtype)
            ends = np.cumsum([len(c) for c in cur]).astype("<u8")
            toks.astype(np.dtype(dtype).newbyteorder("<")).tofile(os.path.join(out_dir, bin_name))
            ends.tofile(os.path.join(out_dir, idx_name))
            shards.append({"bin": bin_name, "idx": idx_name, "tokens": int(len(toks)), "documents": len(cur)})
            for name in (bin_name, idx_name):
                p = os.path.join(out_dir, name)
                manifest["files"][name] = {"sha256": _sha256(p), "bytes": os.path.getsize(p)}
            cur, n = [], 0

        for doc in docs:
            ids = enc.encode_ordinary(doc) + [eos]
            cur.append(np.asarray(ids, dtype=np.int64))
            n += len(ids)
            info["tokens"] += len(ids)
            info["documents"] += 1
            info["text_bytes"] += len(doc.encode("utf-8"))
            if n >= shard_tokens:
                flush()
        flush()
        manifest["splits"][split] = info
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    return manifest


def paragraphs_from_files(paths: list[str], min_chars: int = 40) -> list[str]:
    """Blank-line separated paragraphs of the given text files, in order."""
    docs = []
    for p in paths:
        with open(p, encoding="utf-8", errors="replace") as f:
            for para in f.read().split("\n\n"):
                para = para.strip()
                if len(para) >= min_chars:
                    docs.append(para)
    return docs


def split_docs(docs: list[str], val_every: int = 20) -> dict[str, list[str]]:
    """Every `val_every`-th document to val, the rest to train (deterministic)."""
    return {"train": [d for i, d in enumerate(docs) if i % val_every],
            "val": [d for i, d in enumerate(docs) if i % val_every == 0]}


def main(argv=None):
    p = argparse.ArgumentParser(prog="toy_pack", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="packed output folder")
    p.add_argument("--shard-tokens", type=int, default=1 << 20)
    p.add_argument("--val-every", type=int, default=20, help="every N-th paragraph goes to val")
    p.add_argument("files", nargs="+", help="text files; blank-line separated paragraphs become documents")
    a = p.parse_args(argv)
    m = write_packed(a.out, split_docs(paragraphs_from_files(a.files), a.val_every), shard_tokens=a.shard_tokens)
    print(json.dumps({k: {kk: v[kk] for kk in ("tokens", "documents", "text_bytes")}
                      for k, v in m["splits"].items()}))


if __name__ == "__main__":
    main()
