"""Write a small packed dataset (the `lmrefinery-packed-v1` contract) straight from Python strings.

For tests, benchmarks and a Spark-free quick start: the real packer is `jobs/pack.py`. The default tokenizer is a
byte-level tiktoken encoding (256 byte tokens + `<|endoftext|>` = 256) that needs no download.

    python -m model.toy_pack --out /tmp/toy/packed /usr/share/common-licenses/*
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from udfs import packed

BYTES_PAT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def byte_encoding():
    """Byte-level tiktoken encoding: token i is byte i, 256 is <|endoftext|>."""
    import tiktoken

    return tiktoken.Encoding(name="bytes", pat_str=BYTES_PAT,
                             mergeable_ranks={bytes([i]): i for i in range(256)},
                             special_tokens={"<|endoftext|>": 256})


def write_packed(out_dir: str, splits: dict[str, list[str]], enc=None, shard_tokens: int = 1 << 20,
                 seed: int = 1337, tokenizer_name: str = "bytes", tokenizer_spec: str = "bytes",
                 save_tokenizer: bool = True) -> dict:
    """Tokenize `splits` ({"train": [doc, ...], "val": [...]}), append EOS to each document, cut into shards of
    about `shard_tokens` (whole documents), write .bin/.idx and manifest.json. Returns the manifest.
    With `save_tokenizer` the encoding is saved as `tokenizer.json` (lmrefinery-bpe-v1) and named in the manifest."""
    from udfs.tokenize import tokenizer_manifest

    enc = enc or byte_encoding()
    os.makedirs(out_dir, exist_ok=True)
    V, eos = enc.n_vocab, enc.eot_token
    dtype = packed.token_dtype(V)

    files, split_info = {}, {}
    tok_file = None
    if save_tokenizer:
        # saved as a zero-merge byte-level BPE, so udfs.tokenize.encoding_from_manifest can load it back
        from udfs.bpe import save_bpe

        tok_file = "tokenizer.json"
        save_bpe({"name": enc.name, "pat_str": enc._pat_str, "special_tokens": enc._special_tokens,
                  "vocab_size": V, "ranks": enc._mergeable_ranks}, os.path.join(out_dir, tok_file))
        files[tok_file] = packed.file_entry(os.path.join(out_dir, tok_file))
    for split, docs in splits.items():
        shards, cur, n = [], [], 0
        info = {"tokens": 0, "documents": 0, "text_bytes": 0, "shards": shards}

        def flush():
            nonlocal cur, n
            if not cur:
                return
            bin_name, idx_name = packed.shard_file_names(split, len(shards))
            w = packed.ShardWriter(os.path.join(out_dir, bin_name), os.path.join(out_dir, idx_name))
            w.add(np.concatenate(cur).astype(dtype), [len(c) for c in cur])
            r = w.close()
            shards.append({"bin": bin_name, "idx": idx_name, "tokens": r["tokens"], "documents": r["documents"]})
            files[bin_name] = {"sha256": r["bin_sha256"], "bytes": r["bin_bytes"]}
            files[idx_name] = {"sha256": r["idx_sha256"], "bytes": r["idx_bytes"]}
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
        split_info[split] = info
    tokenizer = {**tokenizer_manifest(tokenizer_spec, enc, tok_file), "name": tokenizer_name}
    manifest = packed.build_manifest(tokenizer, dtype, seed, {"table": "toy", "version": 0}, {}, split_info, files)
    packed.write_manifest(out_dir, manifest)
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
