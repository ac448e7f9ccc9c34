"""Tokenize a table and pack it into token shards for the trainer (`<lake>/packed/`, format lmrefinery-packed-v1).

Steps (all Spark work is distributed; the driver only sees per-partition and per-shard summaries):
1. split: `val` when pmod(xxhash64("lmr-split", id), 1e6) < val_fraction * 1e6, so every epoch copy of a document
   lands in the same split whatever the seed; shuffle key: xxhash64(seed, id, epoch_copy).
2. encode: `mapInArrow` over Arrow batches with `encode_ordinary_batch` (one encoder per Python worker), EOS after
   every document; tokens travel as little-endian bytes of the output dtype.
3. global order: sort by (split, shuffle key, id, epoch_copy); per-partition token totals go to the driver, which
   turns them into each partition's starting offset (a distributed prefix sum). A document whose first token lies
   at offset o of its split goes to shard o // shard_tokens. This depends only on the global order, never on the
   number of partitions, so the bytes are the same for 2 or 8 partitions.
4. write: rows are repartitioned by (split, shard) and sorted inside the partition; executors stream each shard's
   `.bin` and `.idx` (uint64 document end offsets) to disk, hashing as they go.
5. the driver numbers the shards contiguously, writes `manifest.json`, verifies every file (`verify_packed`) and
   renames the temporary folder to `<lake>/packed` (the old one is replaced only when the new one is complete).

No process ever holds a split's tokens: executors hold Arrow batches, the driver holds offsets and summaries.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import datetime as dt
import hashlib
import json
import shutil
import uuid

import numpy as np

from jobs.cli import UserError, base_parser, run_main

FORMAT = "lmrefinery-packed-v1"
SPLIT_SALT = "lmr-split"
SPLIT_BUCKETS = 1_000_000
DEFAULT_REPORT_TOKENIZERS = ["gpt2", "cl100k_base", "o200k_base"]

DESCRIPTION = """\
Tokenize a table (default `mixed`; any table with the document schema, with or without `epoch_copy`) and pack
it into `<lake>/packed/`: per split (train, val) shards `NAME-00000.bin` (uint16 when the vocabulary fits, else
uint32; EOS after every document) with `NAME-00000.idx` (uint64 document end offsets) and `manifest.json`.
The train/val split hashes the document id; the document order hashes (seed, id, epoch_copy). Same input and
options give byte-identical shards whatever the number of Spark partitions.

Tokenizers work offline: gpt2, cl100k_base and o200k_base need `python scripts/install_tokenizers.py` once;
a path to a trained BPE (jobs/train_tokenizer.py) or to a .tiktoken ranks file works too.

examples:
  python jobs/pack.py --lake ./lake --tokenizer gpt2 --val-fraction 0.01 --seed 1337
  python jobs/pack.py --lake ./lake --compression-report          # also bytes/token per domain and tokenizer
  python jobs/pack.py --lake ./lake --report-only --report-tokenizers gpt2,o200k_base,./lake/bpe8k.json
"""

TOKENS_DDL = ("split string, skey bigint, id string, epoch_copy bigint, thash bigint, domain string, "
              "n_tokens bigint, n_bytes bigint, tokens binary")
SHARD_DDL = ("split string, shard bigint, tokens bigint, documents bigint, text_bytes bigint, "
             "bin_name string, bin_bytes bigint, bin_sha256 string, idx_name string, idx_bytes bigint, "
             "idx_sha256 string")
REPORT_DDL = "domain string, tokenizer string, docs bigint, bytes bigint, tokens bigint, words bigint"
ORDER = ["split", "skey", "id", "epoch_copy", "thash"]


class PackedError(UserError):
    """A packed folder does not match its manifest (missing, truncated or corrupted file, wrong dtype...)."""


def build_parser():
    p = base_parser("pack", DESCRIPTION, input_table="mixed")
    p.add_argument("--tokenizer", default=None,
                   help="gpt2 | cl100k_base | o200k_base | PATH (trained BPE or .tiktoken file); default pack.tokenizer")
    p.add_argument("--val-fraction", type=float, default=None, help="share of documents (by id hash) in val")
    p.add_argument("--seed", type=int, default=None, help="document shuffle seed")
    p.add_argument("--shard-tokens", type=int, default=None, help="target tokens per shard (documents are whole)")
    p.add_argument("--nanogpt-bins", action="store_true", default=None,
                   help="also write nanoGPT-style train.bin / val.bin (each split's shards concatenated)")
    p.add_argument("--out", default=None, help="output folder (default <lake>/packed)")
    p.add_argument("--compression-report", action="store_true",
                   help="also write <lake>/reports/tokenizers.json: bytes/token and tokens/word per domain and "
                        "tokenizer (pack.report_tokenizers plus the packing tokenizer)")
    p.add_argument("--report-only", action="store_true", help="write the compression report and do not pack")
    p.add_argument("--report-tokenizers", default=None, help="comma-separated tokenizers for the report")
    p.set_defaults(input_table=None)  # None: pack.input_table from the config, else mixed
    return p


# ---- the Python side of each step (runs in executors) ----------------------------------------------------------
def _encode_fn(resolved: dict, dtype_str: str):
    def encode(batches):
        import pyarrow as pa
        import pyarrow.compute as pc

        from udfs.tokenize import encode_with_eos, load_encoding

        enc = load_encoding(resolved)
        dtype = np.dtype(dtype_str)
        for b in batches:
            texts = b.column("text").to_pylist()
            flat, counts = encode_with_eos(enc, texts, dtype)
            offsets = np.zeros(len(texts) + 1, dtype=np.int64)
            np.cumsum(counts * dtype.itemsize, out=offsets[1:])
            tokens = pa.Array.from_buffers(pa.large_binary(), len(texts),
                                           [None, pa.py_buffer(offsets), pa.py_buffer(flat.tobytes())])
            n_bytes = pc.cast(pc.binary_length(pc.cast(b.column("text"), pa.binary())), pa.int64())
            yield pa.RecordBatch.from_arrays(
                [b.column("split"), b.column("skey"), b.column("id"), b.column("epoch_copy"), b.column("thash"),
                 b.column("domain"), pa.array(counts, pa.int64()), n_bytes, tokens.cast(pa.binary())],
                names=["split", "skey", "id", "epoch_copy", "thash", "domain", "n_tokens", "n_bytes", "tokens"])
    return encode


def _assign_fn(offsets: dict, shard_tokens: int):
    """Adds `shard` = (split offset of the document's first token) // shard_tokens, from per-partition bases."""
    def assign(batches):
        import pyarrow as pa

        running = {}
        for b in batches:
            n = b.num_rows
            if n == 0:
                continue
            pids = b.column("pid").to_numpy()
            splits = b.column("split").to_pylist()
            ntok = b.column("n_tokens").to_numpy()
            shard = np.empty(n, dtype=np.int64)
            for i in range(n):  # rows are sorted by split; cheap Python loop over documents, not tokens
                key = (int(pids[i]), splits[i])
                start = running.get(key)
                if start is None:
                    start = offsets[key]
                shard[i] = start // shard_tokens
                running[key] = start + int(ntok[i])
            cols = [b.column(c) for c in ("split", "skey", "id", "epoch_copy", "thash", "n_tokens", "n_bytes",
                                          "tokens")]
            yield pa.RecordBatch.from_arrays(cols + [pa.array(shard, pa.int64())],
                                             names=["split", "skey", "id", "epoch_copy", "thash", "n_tokens",
                                                    "n_bytes", "tokens", "shard"])
    return assign


class _ShardWriter:
    """Streams one shard's .bin and .idx to disk, hashing both."""

    def __init__(self, out_dir: str, split: str, shard: int):
        self.split, self.shard = split, shard
        self.bin_name = f"{split}-s{shard:09d}.bin.part"
        self.idx_name = f"{split}-s{shard:09d}.idx.part"
        self.fb = open(os.path.join(out_dir, self.bin_name), "wb")
        self.fi = open(os.path.join(out_dir, self.idx_name), "wb")
        self.hb, self.hi = hashlib.sha256(), hashlib.sha256()
        self.tokens = self.documents = self.text_bytes = self.bin_bytes = self.idx_bytes = 0

    def add(self, data: memoryview, ntok: np.ndarray, nbytes: np.ndarray) -> None:
        ends = (self.tokens + np.cumsum(ntok, dtype=np.uint64)).astype("<u8").tobytes()
        self.fb.write(data)
        self.hb.update(data)
        self.fi.write(ends)
        self.hi.update(ends)
        self.tokens += int(ntok.sum())
        self.documents += len(ntok)
        self.text_bytes += int(nbytes.sum())
        self.bin_bytes += len(data)
        self.idx_bytes += len(ends)

    def close(self) -> dict:
        self.fb.close()
        self.fi.close()
        return {"split": self.split, "shard": self.shard, "tokens": self.tokens, "documents": self.documents,
                "text_bytes": self.text_bytes, "bin_name": self.bin_name, "bin_bytes": self.bin_bytes,
                "bin_sha256": self.hb.hexdigest(), "idx_name": self.idx_name, "idx_bytes": self.idx_bytes,
                "idx_sha256": self.hi.hexdigest()}


def _write_fn(out_dir: str, itemsize: int):
    def write(batches):
        import pyarrow as pa

        done, w = [], None
        for b in batches:
            if b.num_rows == 0:
                continue
            splits = b.column("split").to_pylist()
            shards = b.column("shard").to_numpy()
            ntok = b.column("n_tokens").to_numpy()
            nbytes = b.column("n_bytes").to_numpy()
            offs, data = _binary_parts(b.column("tokens"))
            i = 0
            while i < b.num_rows:  # one run of rows per (split, shard) within the batch
                j = i + 1
                while j < b.num_rows and shards[j] == shards[i] and splits[j] == splits[i]:
                    j += 1
                if w is None or (w.split, w.shard) != (splits[i], int(shards[i])):
                    if w is not None:
                        done.append(w.close())
                    w = _ShardWriter(out_dir, splits[i], int(shards[i]))
                if int(ntok[i:j].sum()) * itemsize != int(offs[j] - offs[i]):
                    raise RuntimeError("token bytes do not match token counts")
                w.add(data[offs[i]:offs[j]], ntok[i:j], nbytes[i:j])
                i = j
        if w is not None:
            done.append(w.close())
        if done:
            yield pa.RecordBatch.from_pylist(done, schema=_shard_schema())
    return write


def _binary_parts(arr):
    """(row start offsets as int64, data buffer) of an Arrow binary or large_binary array, without copying."""
    import pyarrow as pa

    width = 8 if pa.types.is_large_binary(arr.type) else 4
    offs = np.frombuffer(arr.buffers()[1], dtype=np.int64 if width == 8 else np.int32, count=len(arr) + 1,
                         offset=arr.offset * width).astype(np.int64)
    return offs, memoryview(arr.buffers()[2])


def _shard_schema():
    import pyarrow as pa

    return pa.schema([("split", pa.string()), ("shard", pa.int64()), ("tokens", pa.int64()),
                      ("documents", pa.int64()), ("text_bytes", pa.int64()), ("bin_name", pa.string()),
                      ("bin_bytes", pa.int64()), ("bin_sha256", pa.string()), ("idx_name", pa.string()),
                      ("idx_bytes", pa.int64()), ("idx_sha256", pa.string())])


# ---- driver ---------------------------------------------------------------------------------------------------
def prepare(df, val_fraction: float, seed: int, extra_val_id: str | None = None):
    """Input rows -> (split, skey, id, epoch_copy, thash, domain, text); null text or id rows are dropped."""
    from pyspark.sql import functions as F

    ec = F.col("epoch_copy").cast("long") if "epoch_copy" in df.columns else F.lit(0).cast("long")
    base = df.where(F.col("text").isNotNull() & F.col("id").isNotNull()).select(
        "id", "text", F.coalesce(F.col("domain"), F.lit("unknown")).alias("domain"), ec.alias("epoch_copy"))
    val_cond = _bucket() < F.lit(int(round(val_fraction * SPLIT_BUCKETS)))
    if extra_val_id is not None:
        val_cond = val_cond | (F.col("id") == F.lit(extra_val_id))
    return base.select(
        F.when(val_cond, F.lit("val")).otherwise(F.lit("train")).alias("split"),
        F.xxhash64(F.lit(int(seed)), F.col("id"), F.col("epoch_copy")).alias("skey"),
        "id", "epoch_copy", F.xxhash64(F.col("text")).alias("thash"), "domain", "text")


def _bucket():
    from pyspark.sql import functions as F

    return F.pmod(F.xxhash64(F.lit(SPLIT_SALT), F.col("id")), F.lit(SPLIT_BUCKETS))


def _first_val_id(df) -> str | None:
    """For inputs too small for val_fraction to pick any id: the id with the lowest split bucket, provided at
    least one other id stays in train."""
    from pyspark.sql import functions as F

    ok = df.where(F.col("text").isNotNull() & F.col("id").isNotNull())
    r = ok.agg(F.min(F.struct(_bucket().alias("b"), F.col("id").alias("id"))).alias("first"),
               F.max("id").alias("last")).collect()[0]
    if r["first"] is None or r["first"]["id"] == r["last"]:
        return None
    return r["first"]["id"]


def pack(spark, df, out_dir: str, tokenizer: str = "gpt2", val_fraction: float = 0.01, seed: int = 1337,
         shard_tokens: int = 50_000_000, nanogpt_bins: bool = False, source: dict | None = None,
         mixture_weights: dict | None = None, partitions: int | None = None, extra: dict | None = None) -> dict:
    """Pack DataFrame `df` (document schema) into `out_dir`; returns the verified manifest."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from jobs.stage import log
    from udfs.tokenize import load_encoding, resolve_spec, token_dtype

    if not 0 <= val_fraction < 1:
        raise UserError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if shard_tokens <= 0:
        raise UserError(f"--shard-tokens must be positive, got {shard_tokens}")
    resolved = resolve_spec(tokenizer)
    enc = load_encoding(resolved)
    dtype = token_dtype(enc.n_vocab)
    partitions = int(partitions or spark.conf.get("spark.sql.shuffle.partitions"))

    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(out_dir)}-tmp-{uuid.uuid4().hex[:12]}")
    os.makedirs(tmp)
    cached = None
    try:
        extra_val = None
        while True:
            rows = prepare(df, val_fraction, seed, extra_val)
            toks = rows.mapInArrow(_encode_fn(resolved, dtype.str), TOKENS_DDL)
            cached = (toks.repartitionByRange(partitions, *ORDER).sortWithinPartitions(*ORDER)
                      .withColumn("pid", F.spark_partition_id()).persist(StorageLevel.MEMORY_AND_DISK))
            # distributed prefix sum: each partition holds one contiguous range of the global order
            parts = cached.groupBy("pid", "split", "domain").agg(
                F.sum("n_tokens").alias("tokens"), F.count(F.lit(1)).alias("docs"),
                F.sum("n_bytes").alias("bytes"), F.min(F.struct(*ORDER[1:])).alias("first")).collect()
            if val_fraction == 0 or extra_val is not None or any(r["split"] == "val" for r in parts):
                break
            extra_val = _first_val_id(df)
            if extra_val is None:
                break
            log(f"pack: no document fell in val at fraction {val_fraction}; moving id {extra_val!r} there")
            cached.unpersist()

        offsets, totals, domain_tokens = {}, {}, {}
        for split in ("train", "val"):
            per_part = {}
            for r in parts:
                if r["split"] != split:
                    continue
                p = per_part.setdefault(int(r["pid"]), {"tokens": 0, "docs": 0, "bytes": 0, "first": None})
                p["tokens"] += int(r["tokens"])
                p["docs"] += int(r["docs"])
                p["bytes"] += int(r["bytes"])
                first = tuple(r["first"])
                p["first"] = first if p["first"] is None else min(p["first"], first)
                if split == "train":
                    domain_tokens[r["domain"]] = domain_tokens.get(r["domain"], 0) + int(r["tokens"])
            pos = 0
            for pid, p in sorted(per_part.items(), key=lambda kv: kv[1]["first"]):
                offsets[(pid, split)] = pos
                pos += p["tokens"]
            totals[split] = {"tokens": pos, "documents": sum(p["docs"] for p in per_part.values()),
                             "text_bytes": sum(p["bytes"] for p in per_part.values())}

        assigned = cached.mapInArrow(_assign_fn(offsets, shard_tokens),
                                     "split string, skey bigint, id string, epoch_copy bigint, thash bigint, "
                                     "n_tokens bigint, n_bytes bigint, tokens binary, shard bigint")
        n_shards = sum(-(-t["tokens"] // shard_tokens) for t in totals.values())
        write_parts = max(1, min(partitions, n_shards))
        written = (assigned.repartition(write_parts, "split", "shard")
                   .sortWithinPartitions("split", "shard", *ORDER[1:])
                   .mapInArrow(_write_fn(tmp, dtype.itemsize), SHARD_DDL).collect())

        manifest = _finalize(tmp, written, totals, dtype, resolved, enc, tokenizer, seed, source,
                             mixture_weights or _shares(domain_tokens), nanogpt_bins, extra)
        log(f"pack: verifying {len(manifest['files'])} files")
        verify_packed(tmp)
        _swap_in(tmp, out_dir)
        tmp = None
        return manifest
    finally:
        if cached is not None:
            cached.unpersist()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _shares(domain_tokens: dict) -> dict:
    total = sum(domain_tokens.values())
    return {d: round(t / total, 6) for d, t in sorted(domain_tokens.items())} if total else {}


def _finalize(tmp, written, totals, dtype, resolved, enc, spec, seed, source, mixture_weights, nanogpt_bins,
              extra) -> dict:
    from udfs.tokenize import sha256_file, tokenizer_manifest

    files, splits = {}, {}
    for split in ("train", "val"):
        mine = sorted((r.asDict() for r in written if r["split"] == split), key=lambda r: r["shard"])
        shards = []
        for k, r in enumerate(mine):
            bin_name, idx_name = f"{split}-{k:05d}.bin", f"{split}-{k:05d}.idx"
            os.replace(os.path.join(tmp, r["bin_name"]), os.path.join(tmp, bin_name))
            os.replace(os.path.join(tmp, r["idx_name"]), os.path.join(tmp, idx_name))
            files[bin_name] = {"sha256": r["bin_sha256"], "bytes": r["bin_bytes"]}
            files[idx_name] = {"sha256": r["idx_sha256"], "bytes": r["idx_bytes"]}
            shards.append({"bin": bin_name, "idx": idx_name, "tokens": r["tokens"], "documents": r["documents"]})
        got = {"tokens": sum(s["tokens"] for s in shards), "documents": sum(s["documents"] for s in shards),
               "text_bytes": sum(r["text_bytes"] for r in mine)}
        if got != totals[split]:
            raise RuntimeError(f"pack: {split} shards hold {got}, the global counts say {totals[split]}")
        splits[split] = {**got, "shards": shards}
    leftovers = [f for f in os.listdir(tmp) if f.endswith(".part")]
    if leftovers:
        raise RuntimeError(f"pack: files written by no reported task: {leftovers[:3]}")

    tok_file = None
    if resolved["kind"] == "bpe":
        tok_file = "tokenizer.json"
        shutil.copyfile(resolved["path"], os.path.join(tmp, tok_file))
        p = os.path.join(tmp, tok_file)
        files[tok_file] = {"sha256": sha256_file(p), "bytes": os.path.getsize(p)}
    nanogpt = {}
    if nanogpt_bins:
        for split, info in splits.items():
            name = f"{split}.bin"
            h, n = hashlib.sha256(), 0
            with open(os.path.join(tmp, name), "wb") as out:
                for sh in info["shards"]:
                    with open(os.path.join(tmp, sh["bin"]), "rb") as f:
                        for block in iter(lambda: f.read(1 << 22), b""):
                            out.write(block)
                            h.update(block)
                            n += len(block)
            files[name] = {"sha256": h.hexdigest(), "bytes": n}
            nanogpt[split] = name
    manifest = {
        "format": FORMAT,
        "tokenizer": tokenizer_manifest(spec, enc, tok_file),
        "dtype": dtype.name,
        "seed": int(seed),
        "source": source or {"table": None, "version": None},
        "mixture_weights": mixture_weights,
        "splits": splits,
        "files": dict(sorted(files.items())),
        "created_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if resolved["kind"] != "openai":
        manifest["tokenizer"]["spec"] = os.path.basename(resolved["path"]) if tok_file else spec
    if nanogpt:
        manifest["nanogpt_bins"] = nanogpt
    if extra:
        manifest.update(extra)
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    return manifest


def _swap_in(tmp: str, out_dir: str) -> None:
    old = None
    if os.path.exists(out_dir):
        old = f"{tmp}-old"
        os.rename(out_dir, old)
    os.rename(tmp, out_dir)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def verify_packed(packed_dir: str, check_hashes: bool = True) -> dict:
    """Check a packed folder against its manifest; returns the manifest or raises PackedError saying what is wrong.

    Checks: every listed file exists with the listed size and sha256; dtype fits the vocabulary; each shard's
    .bin holds exactly `tokens` tokens and its .idx `documents` increasing end offsets ending at `tokens`; every
    document ends with EOS; no token id is outside the vocabulary; split totals equal the sum of their shards."""
    from udfs.tokenize import sha256_file, token_dtype

    path = os.path.join(packed_dir, "manifest.json")
    try:
        with open(path) as f:
            m = json.load(f)
    except FileNotFoundError:
        raise PackedError(f"no manifest.json in {packed_dir}") from None
    except ValueError as e:
        raise PackedError(f"{path} is not valid JSON: {e}") from None
    if m.get("format") != FORMAT:
        raise PackedError(f"{path}: format {m.get('format')!r}, expected {FORMAT!r}")
    vocab, eos = int(m["tokenizer"]["vocab_size"]), int(m["tokenizer"]["eos_id"])
    want = token_dtype(vocab)
    if np.dtype(m["dtype"]).newbyteorder("<") != want:
        raise PackedError(f"{path}: dtype {m['dtype']} does not fit vocab_size {vocab} (expected {want.name})")
    for name, meta in m["files"].items():
        fp = os.path.join(packed_dir, name)
        if not os.path.isfile(fp):
            raise PackedError(f"{name}: file missing from {packed_dir}")
        size = os.path.getsize(fp)
        if size != int(meta["bytes"]):
            raise PackedError(f"{name}: {size} bytes, manifest says {meta['bytes']} (truncated or overwritten)")
        if check_hashes and sha256_file(fp) != meta["sha256"]:
            raise PackedError(f"{name}: sha256 does not match the manifest (corrupted)")
    for split, info in m["splits"].items():
        tokens = docs = 0
        for sh in info["shards"]:
            for key in ("bin", "idx"):
                if sh[key] not in m["files"]:
                    raise PackedError(f"{sh[key]} is not listed in the manifest's files")
            nbytes = os.path.getsize(os.path.join(packed_dir, sh["bin"]))
            if nbytes != int(sh["tokens"]) * want.itemsize:
                raise PackedError(f"{sh['bin']}: {nbytes} bytes is not {sh['tokens']} tokens of {want.name}")
            idx = np.fromfile(os.path.join(packed_dir, sh["idx"]), dtype="<u8").astype(np.int64)
            if len(idx) != int(sh["documents"]):
                raise PackedError(f"{sh['idx']}: {len(idx)} offsets, manifest says {sh['documents']} documents")
            if len(idx) and (idx[0] < 1 or np.any(np.diff(idx) < 1) or idx[-1] != int(sh["tokens"])):
                raise PackedError(f"{sh['idx']}: offsets are not increasing up to the shard's {sh['tokens']} tokens")
            data = np.memmap(os.path.join(packed_dir, sh["bin"]), dtype=want, mode="r") if nbytes else \
                np.zeros(0, want)
            if len(idx) and np.any(data[idx - 1] != eos):
                raise PackedError(f"{sh['bin']}: a document does not end with eos_id {eos} (wrong dtype or corrupt)")
            for s in range(0, len(data), 1 << 24):
                if len(data) and int(data[s:s + (1 << 24)].max()) >= vocab:
                    raise PackedError(f"{sh['bin']}: token id >= vocab_size {vocab}")
            del data
            tokens += int(sh["tokens"])
            docs += int(sh["documents"])
        if (tokens, docs) != (int(info["tokens"]), int(info["documents"])):
            raise PackedError(f"split {split}: shards hold {tokens} tokens / {docs} documents, manifest says "
                              f"{info['tokens']} / {info['documents']}")
    return m


def read_documents(packed_dir: str, split: str):
    """Yield each document's token array (EOS included) of a split, in order, one shard at a time."""
    m = verify_packed(packed_dir, check_hashes=False)
    dtype = np.dtype(m["dtype"]).newbyteorder("<")
    for sh in m["splits"][split]["shards"]:
        data = np.fromfile(os.path.join(packed_dir, sh["bin"]), dtype=dtype)
        idx = np.fromfile(os.path.join(packed_dir, sh["idx"]), dtype="<u8").astype(np.int64)
        start = 0
        for end in idx:
            yield data[start:end]
            start = end


# ---- compression report ---------------------------------------------------------------------------------------
def _report_fn(resolved_list: list):
    def report(batches):
        import pyarrow as pa

        from udfs.tokenize import load_encoding, word_count

        encs = [(name, load_encoding(r)) for name, r in resolved_list]
        for b in batches:
            texts = b.column("text").to_pylist()
            domains = b.column("domain").to_pylist()
            nbytes = [len(t.encode("utf-8")) for t in texts]
            words = [word_count(t) for t in texts]
            acc = {}
            for name, enc in encs:
                counts = [len(t) for t in enc.encode_ordinary_batch(texts, num_threads=1)]
                for d, nb, nw, nt in zip(domains, nbytes, words, counts):
                    a = acc.setdefault((d, name), [0, 0, 0, 0])
                    a[0] += 1
                    a[1] += nb
                    a[2] += nt
                    a[3] += nw
            keys = list(acc)
            yield pa.RecordBatch.from_arrays(
                [pa.array([k[0] for k in keys], pa.string()), pa.array([k[1] for k in keys], pa.string())]
                + [pa.array([acc[k][i] for k in keys], pa.int64()) for i in range(4)],
                names=["domain", "tokenizer", "docs", "bytes", "tokens", "words"])
    return report


def compression_report(df, tokenizers: list[str]) -> dict:
    """Bytes per token and tokens per word for each domain and tokenizer (unique documents, no EOS)."""
    from pyspark.sql import functions as F

    from udfs.tokenize import resolve_spec

    resolved = [(t, resolve_spec(t)) for t in tokenizers]
    docs = df.where(F.col("text").isNotNull())
    if "epoch_copy" in df.columns:
        docs = docs.dropDuplicates(["id"])
    docs = docs.select(F.coalesce(F.col("domain"), F.lit("unknown")).alias("domain"), "text")
    rows = (docs.mapInArrow(_report_fn(resolved), REPORT_DDL).groupBy("domain", "tokenizer")
            .agg(*[F.sum(c).alias(c) for c in ("docs", "bytes", "tokens", "words")]).collect())

    def ratios(a):
        return {**a, "bytes_per_token": round(a["bytes"] / a["tokens"], 4) if a["tokens"] else None,
                "tokens_per_word": round(a["tokens"] / a["words"], 4) if a["words"] else None}

    domains, overall = {}, {}
    for r in sorted(rows, key=lambda r: (r["domain"], r["tokenizer"])):
        a = {k: int(r[k]) for k in ("docs", "bytes", "tokens", "words")}
        domains.setdefault(r["domain"], {})[r["tokenizer"]] = ratios(a)
        o = overall.setdefault(r["tokenizer"], {k: 0 for k in a})
        for k in a:
            o[k] += a[k]
    return {"tokenizers": list(tokenizers), "domains": domains,
            "all": {t: ratios(a) for t, a in overall.items()}}


def format_report(report: dict) -> str:
    toks = report["tokenizers"]
    head = f"{'domain':<16}" + "".join(f"{t[:18]:>22}" for t in toks)
    lines = ["bytes/token (tokens/word)", head]
    for d, per in list(report["domains"].items()) + [("ALL", report["all"])]:
        cells = []
        for t in toks:
            a = per.get(t)
            cells.append(f"{a['bytes_per_token']:>10} ({a['tokens_per_word']})".rjust(22) if a else " " * 22)
        lines.append(f"{d[:16]:<16}" + "".join(cells))
    return "\n".join(lines)


# ---- entry point ----------------------------------------------------------------------------------------------
def _mix_weights(lake, table: str, version) -> dict | None:
    """Target weights the mix stage recorded in its metrics row for this table version, if any."""
    try:
        rows = lake.read_arrow("metrics").to_pylist() if lake.exists("metrics") else []
    except Exception:
        return None
    for r in sorted(rows, key=lambda r: r["started_at"], reverse=True):
        if r.get("stage") == "mix" and r.get("output_table") == table and r.get("output_version") == version:
            extra = json.loads(r.get("extra") or "{}")
            for key in ("mixture_weights", "weights", "target_weights"):
                if isinstance(extra.get(key), dict):
                    return {str(k): float(v) for k, v in extra[key].items()}
    return None


def main(argv=None):
    from jobs.config import load_config
    from jobs.session import get_spark
    from jobs.stage import StageRun, log
    from jobs.tables import Lake
    from udfs.tokenize import load_encoding, ranks_sha256, resolve_spec

    args = build_parser().parse_args(argv)
    cfg = dict(load_config(args.conf, args.overrides).get("pack") or {})
    for key, val in (("tokenizer", args.tokenizer), ("val_fraction", args.val_fraction), ("seed", args.seed),
                     ("shard_tokens", args.shard_tokens), ("nanogpt_bins", args.nanogpt_bins)):
        if val is not None:
            cfg[key] = val
    cfg.setdefault("tokenizer", "gpt2")
    cfg.setdefault("val_fraction", 0.01)
    cfg.setdefault("seed", 1337)
    cfg.setdefault("shard_tokens", 50_000_000)
    cfg.setdefault("nanogpt_bins", False)
    args.input_table = args.input_table or cfg.get("input_table") or "mixed"
    spark = get_spark("lmrefinery-pack", master=args.master)
    lake = Lake(spark, args.lake)
    version = lake.version(args.input_table)
    if version is None:
        raise UserError(f"table '{args.input_table}' not found under lake {lake.root} (run the mix stage first, "
                        f"or pass --input-table)")
    df = lake.read(args.input_table, version)
    missing = {"id", "text", "domain"} - set(df.columns)
    if missing:
        raise UserError(f"table '{args.input_table}' lacks columns {sorted(missing)} (document schema expected)")

    if args.compression_report or args.report_only:
        names = (args.report_tokenizers.split(",") if args.report_tokenizers
                 else list(cfg.get("report_tokenizers") or DEFAULT_REPORT_TOKENIZERS))
        if not args.report_tokenizers and cfg["tokenizer"] not in names:
            names.append(cfg["tokenizer"])
        report = compression_report(df, [n.strip() for n in names if n.strip()])
        report = {"table": args.input_table, "version": version,
                  "created_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), **report}
        path = os.path.join(lake.root, "reports", "tokenizers.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump(report, f, indent=2)
        os.replace(path + ".tmp", path)
        print(format_report(report))
        log(f"pack: compression report written to {path}")
        if args.report_only:
            return 0

    out_dir = os.path.abspath(args.out or os.path.join(lake.root, "packed"))
    enc = load_encoding(resolve_spec(str(cfg["tokenizer"])))
    run_cfg = {k: v for k, v in cfg.items() if k not in ("report_tokenizers", "input_table")}
    run = StageRun(lake, "pack", run_cfg, args.input_table, [], force=args.force,
                   input_version=version, extra_key={"ranks_sha256": ranks_sha256(enc), "out": out_dir})
    if run.already_done(quiet=True) and _still_there(out_dir, run.run_key):
        log(f"pack: {out_dir} already holds this input and config (verified sizes); skipping. Use --force to "
            f"run again.")
        return 0

    docs_in = df.count()
    manifest = pack(spark, df, out_dir, tokenizer=str(cfg["tokenizer"]), val_fraction=float(cfg["val_fraction"]),
                    seed=int(cfg["seed"]), shard_tokens=int(cfg["shard_tokens"]),
                    nanogpt_bins=bool(cfg["nanogpt_bins"]), source={"table": args.input_table, "version": version},
                    mixture_weights=_mix_weights(lake, args.input_table, version),
                    extra={"stage_run": {"run_id": run.run_id, "run_key": run.run_key,
                                         "config_hash": run.config_hash}})
    s = manifest["splits"]
    docs_out = s["train"]["documents"] + s["val"]["documents"]
    tokens = s["train"]["tokens"] + s["val"]["tokens"]
    log(f"pack: {out_dir}: train {s['train']['tokens']} tokens / {s['train']['documents']} docs in "
        f"{len(s['train']['shards'])} shards, val {s['val']['tokens']} tokens / {s['val']['documents']} docs; "
        f"dtype {manifest['dtype']}, tokenizer {manifest['tokenizer']['name']}")
    run.finish(docs_in=docs_in, docs_out=docs_out, docs_rejected=docs_in - docs_out, tokens_in=tokens,
               tokens_out=tokens, reasons={"null_text_or_id": docs_in - docs_out} if docs_in != docs_out else {},
               extra={"out": out_dir, "dtype": manifest["dtype"], "tokenizer": manifest["tokenizer"],
                      "train_tokens": s["train"]["tokens"], "val_tokens": s["val"]["tokens"]})
    return 0


def _still_there(out_dir: str, run_key: str) -> bool:
    try:
        m = verify_packed(out_dir, check_hashes=False)
    except PackedError:
        return False
    return (m.get("stage_run") or {}).get("run_key") == run_key


if __name__ == "__main__":
    sys.exit(run_main("pack", main))
