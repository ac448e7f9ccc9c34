"""Packing into token shards: exact round trip, tiktoken counts, dtype, manifest checks, determinism."""
import json
import os
import shutil
from collections import Counter

import numpy as np
import pytest
import tiktoken

from jobs.pack import PackedError, compression_report, main, pack, read_documents, verify_packed
from jobs.schema import document_row, documents_df
from udfs.tokenize import encoding_from_manifest, load_encoding

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "def f(x):\n    return x ** 2  # square\n",
    "Grüße aus Köln — naïve café, déjà vu.",
    "日本語のテキストと中文文本混合。",
    "emoji 👩‍👩‍👧‍👦 family, flags 🇩🇪🇯🇵, skin 👍🏽",
    "e\u0301 combining a\u0308 o\u0323\u0302 marks",
    "control\x00chars\x07\x1b[31m red \x7f",
    "special token text <|endoftext|> must be plain text",
    "",
    "   \n\n\t  whitespace only  \n",
    "numbers 1234567890 3.14159 1e-9 0xdeadbeef",
    "مرحبا بالعالم — עברית",
]


def _rows(n=40):
    rows = []
    for i in range(n):
        base = TEXTS[i % len(TEXTS)]
        rows.append(document_row(f"doc-{i:03d}", f"{base} [{i}] " + "lorem ipsum " * (i % 5),
                                 domain=("web", "code", "books")[i % 3]))
    return rows


@pytest.fixture(scope="module")
def mixed_df(spark, tmp_path_factory):
    """A `mixed`-like Delta table: every 'code' document appears twice (epoch_copy 0 and 1)."""
    from pyspark.sql import functions as F

    from jobs.tables import Lake

    df = documents_df(spark, _rows()).withColumn("epoch_copy", F.lit(0).cast("long"))
    again = df.where(F.col("domain") == "code").withColumn("epoch_copy", F.lit(1).cast("long"))
    lake = Lake(spark, str(tmp_path_factory.mktemp("mixedlake")))
    lake.write(df.unionByName(again).coalesce(1), "mixed")
    return lake.read("mixed")


def _expected_multiset(rows, copies_of_code=True):
    texts = []
    for r in rows:
        texts.append(r["text"])
        if copies_of_code and r["domain"] == "code":
            texts.append(r["text"])
    return Counter(texts)


def _packed_texts(packed_dir, enc):
    out = {}
    for split in ("train", "val"):
        docs = []
        for toks in read_documents(packed_dir, split):
            assert int(toks[-1]) == enc.eot_token
            docs.append((toks[:-1].astype(np.int64).tolist(), enc.decode_bytes(toks[:-1].tolist()).decode("utf-8")))
        out[split] = docs
    return out


def test_pack_job_roundtrip_counts_and_manifest(spark, lake, lake_dir, mixed_df):
    lake.write(mixed_df, "mixed")
    argv = ["--lake", lake_dir, "--tokenizer", "gpt2", "--val-fraction", "0.2", "--seed", "7",
            "--shard-tokens", "150", "--nanogpt-bins"]
    assert main(argv) == 0
    packed = os.path.join(lake_dir, "packed")
    m = verify_packed(packed)
    assert m["format"] == "lmrefinery-packed-v1" and m["dtype"] == "uint16"
    assert m["tokenizer"]["vocab_size"] == 50257 and m["tokenizer"]["eos_id"] == 50256
    assert m["source"] == {"table": "mixed", "version": lake.version("mixed")}
    assert len(m["splits"]["train"]["shards"]) > 2 and m["splits"]["val"]["documents"] > 0
    enc = encoding_from_manifest(m, packed)
    ref = tiktoken.Encoding("ref", pat_str=enc._pat_str, mergeable_ranks=enc._mergeable_ranks,
                            special_tokens={"<|endoftext|>": 50256})
    got = _packed_texts(packed, enc)
    rows = _rows()
    # every document (with its epoch copy) decodes back to its exact text, with tiktoken's own token ids
    assert Counter(t for s in got.values() for _, t in s) == _expected_multiset(rows)
    for split, docs in got.items():
        for toks, text in docs:
            assert toks == ref.encode_ordinary(text)
        info = m["splits"][split]
        assert info["tokens"] == sum(len(t) + 1 for t, _ in docs)
        assert info["text_bytes"] == sum(len(x.encode("utf-8")) for _, x in docs)
    # the split hashes the id: both epoch copies of a document land in the same split
    val_texts, train_texts = {t for _, t in got["val"]}, {t for _, t in got["train"]}
    assert not (val_texts & train_texts)
    # nanoGPT bins are the concatenated shards
    for split in ("train", "val"):
        cat = b"".join(open(os.path.join(packed, s["bin"]), "rb").read() for s in m["splits"][split]["shards"])
        assert open(os.path.join(packed, f"{split}.bin"), "rb").read() == cat
    # a second run with the same input and config is skipped (manifest untouched)
    before = open(os.path.join(packed, "manifest.json")).read()
    assert main(argv) == 0
    assert open(os.path.join(packed, "manifest.json")).read() == before
    row = [r for r in lake.read_arrow("metrics").to_pylist() if r["stage"] == "pack"][-1]
    assert row["docs_in"] == row["docs_out"] == sum(_expected_multiset(rows).values())


def test_o200k_uses_uint32(spark, tmp_path, mixed_df):
    out = str(tmp_path / "packed")
    # val_fraction this small selects no id by hash on 40 documents: the lowest-bucket id is moved to val
    m = pack(spark, mixed_df, out, tokenizer="o200k_base", val_fraction=0.0001, seed=1, shard_tokens=10_000)
    assert m["dtype"] == "uint32" and m["tokenizer"]["vocab_size"] == 200019
    assert m["splits"]["val"]["documents"] in (1, 2)  # one id (two if it is a code document with its copy)
    sh = m["splits"]["train"]["shards"][0]
    assert os.path.getsize(os.path.join(out, sh["bin"])) == 4 * sh["tokens"]
    enc = load_encoding("o200k_base")
    got = _packed_texts(out, enc)
    assert Counter(t for s in got.values() for _, t in s) == _expected_multiset(_rows())
    for docs in got.values():
        for toks, text in docs:
            assert toks == enc.encode_ordinary(text)
    assert any(max(t, default=0) > 65535 for docs in got.values() for t, _ in docs)


def test_val_fraction_under_one_bucket_picks_the_val_id_before_encoding(spark, tmp_path, mixed_df, capfd):
    capfd.readouterr()
    m = pack(spark, mixed_df, str(tmp_path / "packed"), tokenizer="gpt2", val_fraction=1e-9, seed=1)
    err = capfd.readouterr().err
    assert m["splits"]["val"]["documents"] in (1, 2)  # one id (two rows if it is a code document with its copy)
    assert "goes to val" in err and "no document fell in val" not in err  # no encode pass was wasted


def test_same_seed_identical_bytes_across_partition_counts(spark, tmp_path, mixed_df):
    outs = []
    for parts in (2, 8):
        out = str(tmp_path / f"p{parts}")
        pack(spark, mixed_df.repartition(parts), out, tokenizer="gpt2", val_fraction=0.2, seed=42,
             shard_tokens=200, partitions=parts)
        outs.append(out)
    a, b = outs
    files = sorted(f for f in os.listdir(a) if f != "manifest.json")
    assert files == sorted(f for f in os.listdir(b) if f != "manifest.json") and len(files) > 4
    for f in files:
        assert open(os.path.join(a, f), "rb").read() == open(os.path.join(b, f), "rb").read(), f
    ma, mb = (json.load(open(os.path.join(d, "manifest.json"))) for d in outs)
    ma.pop("created_at"), mb.pop("created_at")
    assert ma == mb
    # another seed: same documents, another order
    out = str(tmp_path / "seed2")
    m2 = pack(spark, mixed_df, out, tokenizer="gpt2", val_fraction=0.2, seed=43, shard_tokens=200)
    assert m2["splits"]["train"]["tokens"] == ma["splits"]["train"]["tokens"]
    assert m2["files"]["train-00000.bin"]["sha256"] != ma["files"]["train-00000.bin"]["sha256"]


def test_shard_rule_with_documents_longer_than_a_shard(spark, tmp_path, mixed_df):
    """A document goes to shard (split offset of its first token) // shard_tokens; shard numbers that no document
    starts in are skipped; encode pieces and temporary folders are gone afterwards."""
    shard_tokens = 7  # most documents are longer than this
    out = str(tmp_path / "packed")
    m = pack(spark, mixed_df, out, tokenizer="gpt2", val_fraction=0.2, seed=5, shard_tokens=shard_tokens,
             partitions=3)
    for split in ("train", "val"):
        pos, last = 0, -1
        for sh in m["splits"][split]["shards"]:
            ends = np.fromfile(os.path.join(out, sh["idx"]), dtype="<u8").astype(np.int64)
            starts = pos + np.concatenate(([0], ends[:-1]))
            numbers = set((starts // shard_tokens).tolist())
            assert len(numbers) == 1, (split, sh["bin"], numbers)
            assert numbers.pop() > last
            last = int(starts[0] // shard_tokens)
            pos += int(ends[-1])
        assert pos == m["splits"][split]["tokens"]
    assert any(sh["tokens"] > shard_tokens for sh in m["splits"]["train"]["shards"])
    assert sorted(os.listdir(tmp_path)) == ["packed"]  # no pieces or temporary folders left


def test_verify_detects_corruption_and_truncation(spark, tmp_path, mixed_df):
    good = str(tmp_path / "good")
    pack(spark, mixed_df, good, tokenizer="gpt2", val_fraction=0.1, seed=3, shard_tokens=400)
    verify_packed(good)

    def broken(name, edit):
        d = str(tmp_path / name)
        shutil.copytree(good, d)
        edit(d)
        return d

    def flip(d):
        p = os.path.join(d, "train-00000.bin")
        data = bytearray(open(p, "rb").read())
        data[10] ^= 0x01
        open(p, "wb").write(bytes(data))

    def truncate_bin(d):
        p = os.path.join(d, "train-00001.bin")
        os.truncate(p, os.path.getsize(p) - 2)

    def truncate_idx(d):
        p = os.path.join(d, "val-00000.idx")
        os.truncate(p, os.path.getsize(p) - 8)

    with pytest.raises(PackedError, match=r"train-00000.bin: sha256 does not match"):
        verify_packed(broken("flip", flip))
    with pytest.raises(PackedError, match=r"train-00001.bin: \d+ bytes, manifest says \d+ \(truncated"):
        verify_packed(broken("trunc", truncate_bin))
    with pytest.raises(PackedError, match=r"val-00000.idx: \d+ bytes"):
        verify_packed(broken("trunc_idx", truncate_idx))

    # a consistent-looking manifest whose idx disagrees with the bin is caught without hashes too
    d = broken("idx", lambda d: None)
    p = os.path.join(d, "train-00000.idx")
    idx = np.fromfile(p, dtype="<u8")
    idx[0] += 1
    idx.astype("<u8").tofile(p)
    with pytest.raises(PackedError, match="does not end with eos_id"):
        verify_packed(d, check_hashes=False)
    os.remove(os.path.join(d, "val-00000.bin"))
    with pytest.raises(PackedError, match="val-00000.bin: file missing"):
        verify_packed(d, check_hashes=False)


def test_compression_report_matches_tiktoken(spark, mixed_df):
    rep = compression_report(mixed_df, ["gpt2", "o200k_base"])
    rows = _rows()
    for name in ("gpt2", "o200k_base"):
        enc = load_encoding(name)
        for domain in ("web", "code", "books"):
            mine = [r["text"] for r in rows if r["domain"] == domain]  # unique documents: epoch copies dropped
            a = rep["domains"][domain][name]
            assert a["docs"] == len(mine)
            assert a["tokens"] == sum(len(enc.encode_ordinary(t)) for t in mine)
            assert a["bytes"] == sum(len(t.encode()) for t in mine)
            assert a["words"] == sum(len(t.split()) for t in mine)
            assert a["bytes_per_token"] == round(a["bytes"] / a["tokens"], 4)
        assert rep["all"][name]["docs"] == len(rows)
    # o200k compresses this multilingual text better than gpt2
    assert rep["all"]["o200k_base"]["bytes_per_token"] > rep["all"]["gpt2"]["bytes_per_token"]


def test_report_only_cli_and_missing_table(spark, lake, lake_dir, capsys):
    from jobs.cli import run_main

    assert run_main("pack", main, ["--lake", lake_dir]) == 2
    assert "table 'mixed' not found" in capsys.readouterr().err
    lake.write(documents_df(spark, _rows(12)), "docs")  # no epoch_copy column
    assert main(["--lake", lake_dir, "--input-table", "docs", "--report-only",
                 "--report-tokenizers", "gpt2,cl100k_base"]) == 0
    rep = json.load(open(os.path.join(lake_dir, "reports", "tokenizers.json")))
    assert rep["table"] == "docs" and set(rep["all"]) == {"gpt2", "cl100k_base"}
    assert "bytes/token" in capsys.readouterr().out
    assert not os.path.exists(os.path.join(lake_dir, "packed"))
